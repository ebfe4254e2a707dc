"""`python -m grenade_py.devices`: list OpenCL platforms and devices with their index strings,
as accepted by `--device`, `Device(spec)` and the PYOPENCL_CTX variable."""
from __future__ import annotations

import os

import click
import pyopencl as cl

from grenade_py.errors import DeviceError
from grenade_py.platforms import _platforms, choose_cl_device, generic_cpu_note


@click.command()
def main() -> None:
    """List OpenCL devices; '*' marks the one grenade_py picks by default."""
    try:
        platforms = _platforms()
    except DeviceError as e:
        raise click.ClickException(str(e)) from None
    try:
        default, problem = choose_cl_device(), ""
    except DeviceError as e:  # a PYOPENCL_CTX naming no device, say: list them all first
        default, problem = None, str(e)
    if os.environ.get("PYOPENCL_CTX") and problem.startswith("no OpenCL device '"):
        try:  # the variable is the problem only where there is a device without it
            choose_cl_device("")
            problem = (f"PYOPENCL_CTX={os.environ['PYOPENCL_CTX']!r} names none of these "
                       "devices: set it to one of the PLATFORM:DEVICE above, or unset it")
        except DeviceError as e:
            problem = str(e)
    for p_index, platform in enumerate(platforms):
        click.echo(f"platform {p_index}: {platform.name.strip()} ({platform.version.strip()})")
        for d_index, device in enumerate(platform.get_devices()):
            mark = "*" if device == default else " "
            kind = "GPU" if device.type & cl.device_type.GPU else (
                "CPU" if device.type & cl.device_type.CPU else "other")
            fp64 = "float64" if device.double_fp_config else "float32 only"
            click.echo(f" {mark} {p_index}:{d_index}  {device.name.strip()}  [{kind}, "
                       f"{device.max_compute_units} compute units, {fp64}]")
            note = generic_cpu_note(device)
            if note:
                click.echo(f"        note: {note}")
    if problem:  # after the listing, which is what the user came for
        raise click.ClickException(problem)


if __name__ == "__main__":
    main()
