{
  description = "grenade_py: Grenade's typed networks of layers as OpenCL kernels";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.05";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in {
      packages = forAll (pkgs: rec {
        grenade_py = pkgs.callPackage ./nix/package.nix { };
        default = grenade_py;
      });
      devShells = forAll (pkgs: {
        default = import ./nix/shell.nix { inherit pkgs; };
      });
    };
}
