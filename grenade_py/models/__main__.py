"""`python -m grenade_py.models`: the shipped models and their recorded figures."""
from grenade_py.models import main

main()
