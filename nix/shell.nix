# Development shells.
#   default: toolchain from rust-toolchain.toml (+ rust-src, rust-analyzer), nextest, redis, pinned LiteLLM, docker CLI, uv.
#   gpu:     default + CUDA tools. The only output that instantiates nixpkgs with
#            allowUnfree/cudaSupport, so evaluating anything else stays free-only.
{
  lib,
  pkgs,
  pkgsCuda,
  devToolchain,
  litellm,
}:
let

  mkDevShell =
    name: extra:
    pkgs.mkShell {
      inherit name;
      packages = [
        devToolchain
        pkgs.cargo-nextest
        pkgs.redis
        litellm
        pkgs.docker-client
        pkgs.python3
        pkgs.uv
        pkgs.actionlint
        pkgs.shellcheck
      ]
      ++ extra;
      GAUNTLET_LITELLM_BIN = lib.getExe litellm;
      LITELLM_LOCAL_MODEL_COST_MAP = "True";
    };

  default = mkDevShell "gauntlet" [ ];

  # nvcc/cudart for building probes and nvidia-ctk for generating the CDI spec. The driver
  # (libcuda, nvidia-smi) always comes from the host, and vLLM brings its own CUDA inside its
  # image. See docs/nix.md.
  gpu = mkDevShell "gauntlet-gpu" [
    pkgsCuda.cudaPackages.cuda_nvcc
    pkgsCuda.cudaPackages.cuda_cudart
    pkgsCuda.nvidia-container-toolkit
  ];
in
{
  inherit default gpu;
}
