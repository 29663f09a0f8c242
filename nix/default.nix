# Per-system assembly: one pkgs, one crane lib, and every output the flake exposes for `system`.
{
  lib,
  system,
  nixpkgs,
  rust-overlay,
  crane,
  root,
}:
let
  pkgs = import nixpkgs {
    inherit system;
    overlays = [ rust-overlay.overlays.default ];
  };

  # The toolchain is whatever rust-toolchain.toml pins (channel 1.95.0 + rustfmt, clippy);
  # the devShell adds rust-src/rust-analyzer on top of the same channel.
  toolchainFile = root + "/rust-toolchain.toml";
  toolchainFor = p: p.rust-bin.fromRustupToolchainFile toolchainFile;
  toolchain = toolchainFor pkgs;
  devToolchain =
    let
      pinned = (builtins.fromTOML (builtins.readFile toolchainFile)).toolchain;
    in
    pkgs.rust-bin.fromRustupToolchain (
      pinned
      // {
        components = (pinned.components or [ ]) ++ [
          "rust-src"
          "rust-analyzer"
        ];
      }
    );
  craneLib = (crane.mkLib pkgs).overrideToolchain toolchainFor;

  litellm = pkgs.callPackage ./litellm.nix { };

  runner = import ./runner.nix { inherit lib craneLib root; };
  gauntlet = runner.package;

  images = pkgs.callPackage ./images.nix { inherit gauntlet; };

  apps = import ./apps.nix {
    inherit
      lib
      pkgs
      gauntlet
      litellm
      ;
  };

  shells = import ./shell.nix {
    inherit
      lib
      pkgs
      nixpkgs
      system
      devToolchain
      litellm
      ;
  };
in
{
  inherit
    system
    pkgs
    gauntlet
    litellm
    images
    apps
    shells
    ;
  inherit (runner) checks;
}
