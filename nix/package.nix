# grenade_py built from this checkout. nixpkgs' pocl is the OpenCL driver, found through the
# ICD loader (OCL_ICD_VENDORS), so the pip-only pocl-binary-distribution dependency is dropped.
{ lib, python3Packages, pocl, ocl-icd, makeWrapper }:

python3Packages.buildPythonPackage {
  pname = "grenade_py";
  version = "0.1.0";
  pyproject = true;
  src = lib.cleanSource ../.;

  build-system = [ python3Packages.setuptools python3Packages.wheel ];
  nativeBuildInputs = [ makeWrapper ];
  dependencies = with python3Packages; [ pyopencl numpy click ];
  nativeCheckInputs = [ python3Packages.pytest pocl ];

  # Drop the PyPI-only PoCL wheel: nixpkgs' pocl provides the CPU device.
  postPatch = ''
    sed -i '/pocl-binary-distribution/d' setup.cfg
  '';

  makeWrapperArgs = [ "--set-default" "OCL_ICD_VENDORS" "${pocl}/etc/OpenCL/vendors" ];

  preCheck = ''
    export OCL_ICD_VENDORS=${pocl}/etc/OpenCL/vendors
    export HOME=$TMPDIR
  '';
  checkPhase = ''
    runHook preCheck
    pytest -q tests -k "not wheel"
    runHook postCheck
  '';
  pythonImportsCheck = [ "grenade_py" ];

  meta = {
    description = "Grenade's typed networks of layers, every layer an OpenCL kernel";
    license = lib.licenses.bsd2;
  };
}
