# The development environment: python3 with pyopencl, numpy, click and pytest, and nixpkgs'
# pocl as the OpenCL CPU driver. `nix develop` (flake) or `nix-shell nix/shell.nix`.
{ pkgs ? import <nixpkgs> { } }:

pkgs.mkShell {
  packages = [
    (pkgs.python3.withPackages (ps: with ps; [ pyopencl numpy click pytest build setuptools wheel ]))
    pkgs.pocl
    pkgs.ocl-icd
    pkgs.clinfo
  ];
  shellHook = ''
    export OCL_ICD_VENDORS=${pkgs.pocl}/etc/OpenCL/vendors
    export PYTHONPATH=$PWD''${PYTHONPATH:+:$PYTHONPATH}
  '';
}
