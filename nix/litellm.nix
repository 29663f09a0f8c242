# LiteLLM pinned to 1.100.5, the version stack/litellm/requirements.lock installs outside Nix.
#
# nixpkgs' python3Packages.litellm is another version, so it is overridden here. 1.100.5 is no
# longer pure Python: its sdist builds a Rust extension (litellm.rust_bridge._native) with
# maturin 1.9.4 from litellm-rust/Cargo.lock, which would need a cargoDeps hash that cannot be
# computed without Nix network access. So the override installs PyPI's prebuilt abi3 wheel for
# the host platform instead (sha256 values below are PyPI's own, checked against the files).
#
# Refresh (new version): for each platform take the wheel's sha256 from
#   https://pypi.org/simple/litellm/  (or `pip download --no-deps --only-binary :all:
#   --platform <tag> litellm==X -d /tmp/w && sha256sum /tmp/w/*`)
# and convert with `nix hash to-sri --type sha256 <hex>`.
{
  lib,
  stdenv,
  python3,
  fetchurl,
  autoPatchelfHook,
}:
let
  version = "1.100.5";
  ps = python3.pkgs;

  wheels = {
    x86_64-linux = {
      file = "litellm-${version}-cp310-abi3-manylinux_2_28_x86_64.whl";
      url = "https://files.pythonhosted.org/packages/5e/3a/08baa2b0d2757627c4257a317026df11bdb06a881db67edb575d665ca643";
      hash = "sha256-3UHOXZnELKO9bLV0jmp23jfRZzIG9GHvLfq7XTEpwEA=";
    };
    aarch64-linux = {
      file = "litellm-${version}-cp310-abi3-manylinux_2_28_aarch64.whl";
      url = "https://files.pythonhosted.org/packages/29/93/e017ec1c307f7c026a14915f831b7145b0b3f4f1c833d9a5afa402420cf2";
      hash = "sha256-VRGmr3CwCXVOj6/C+K4TRmfZDLEN7197yxDGVsYC7Hc=";
    };
    x86_64-darwin = {
      file = "litellm-${version}-cp310-abi3-macosx_10_12_x86_64.whl";
      url = "https://files.pythonhosted.org/packages/87/b0/58d0d9435d010e2dea9e353278544e97102b5091ab6572074153ee85fa0c";
      hash = "sha256-T89yldZYQFyTiHzfCPaJMrXP7dKVEWgEOF3zoku9rI4=";
    };
    aarch64-darwin = {
      file = "litellm-${version}-cp310-abi3-macosx_11_0_arm64.whl";
      url = "https://files.pythonhosted.org/packages/8e/54/0b83785afe480f799678ad46097cd48ef181bdab9dc4b4090cdfcc4885df";
      hash = "sha256-q3dRwzmAO1iuBd2qiiEocsIh/hDQolR2N9MoXe1RwqA=";
    };
  };
  # For reference (not used): the sdist, litellm-1.100.5.tar.gz,
  # sha256-V92Xe4Lxgvf4IfkNO/h6SLhGnyJpy+SJhXmDUk2t7uQ=
  # (hex 57dd977b82f182f7f821f90d3bf87a48b8469f2269cbe489857983524dadeee4).

  wheel =
    wheels.${stdenv.hostPlatform.system}
      or (throw "litellm ${version}: no wheel pinned for ${stdenv.hostPlatform.system}");

  # Exact pins from litellm 1.100.5's `proxy` extra; both are pure-Python wheels without deps.
  pinnedWheel =
    {
      pname,
      version,
      file,
      url,
      hash,
    }:
    ps.buildPythonPackage {
      inherit pname version;
      format = "wheel";
      src = fetchurl {
        url = "${url}/${file}";
        inherit hash;
      };
      doCheck = false;
    };

  litellm-proxy-extras = pinnedWheel {
    pname = "litellm-proxy-extras";
    version = "0.4.91";
    file = "litellm_proxy_extras-0.4.91-py3-none-any.whl";
    url = "https://files.pythonhosted.org/packages/ea/4c/f07dd3f56daee27778b6d98c6a4c215739cc2b4b535d00bf8bbef9b10fc5";
    hash = "sha256-0Z/lNZGwu9SK/yTLGhZrDGj/JJFGnO7IjqqDxqNkVi0=";
  };
  litellm-enterprise = pinnedWheel {
    pname = "litellm-enterprise";
    version = "0.1.62";
    file = "litellm_enterprise-0.1.62-py3-none-any.whl";
    url = "https://files.pythonhosted.org/packages/33/0c/b86801eb87540ac98559b8dd470761fdd901b329b9befc24ae11e55f6908";
    hash = "sha256-M3aXFgiW1SB5KQ/+gFHD3uRQZT0nHLKXI69tuFRut9k=";
  };

  # Requires-Dist of the 1.100.5 wheel (core, then the `proxy` extra), by nixpkgs attribute name.
  # nixpkgs carries its own versions of these, not the ranges LiteLLM asks for; names nixpkgs
  # lacks at the pinned revision are skipped and listed in passthru.missingDeps instead of
  # failing evaluation. Check it with:
  #   nix eval .#litellm.missingDeps
  coreNames = [
    "fastuuid"
    "httpx"
    "openai"
    "python-dotenv"
    "tiktoken"
    "importlib-metadata"
    "tokenizers"
    "click"
    "jinja2"
    "aiohttp"
    "pydantic"
    "pydantic-settings"
    "jsonschema"
    "boto3"
  ];
  proxyNames = [
    "gunicorn"
    "uvicorn"
    "granian"
    "uvloop"
    "fastapi"
    "starlette"
    "backoff"
    "pyyaml"
    "rq"
    "orjson"
    "hiredis"
    "apscheduler"
    "fastapi-sso"
    "pyjwt"
    "python-multipart"
    "cryptography"
    "pynacl"
    "websockets"
    "azure-identity"
    "azure-storage-blob"
    "mcp"
    "restrictedpython"
    "rich"
    "inquirerpy"
    "polars"
    "soundfile"
    "pyroscope-io"
    "expression"
    # Not a LiteLLM dependency, but its auth error handler imports it even without a
    # database (stack/litellm/requirements.in says why): same as the pip lock.
    "prisma"
  ];
  present = builtins.filter (n: ps ? ${n});
  missingDeps = builtins.filter (n: !(ps ? ${n})) (coreNames ++ proxyNames);
  resolve = names: map (n: ps.${n}) (present names);

  proxyDeps = resolve proxyNames ++ [
    litellm-proxy-extras
    litellm-enterprise
  ];
in
ps.litellm.overridePythonAttrs (old: {
  inherit version;
  pyproject = null;
  format = "wheel";
  src = fetchurl {
    url = "${wheel.url}/${wheel.file}";
    inherit (wheel) hash;
  };

  # The wheel is already built: nothing of nixpkgs' source build applies.
  build-system = [ ];
  postPatch = "";
  # The abi3 extension links libgcc_s (checked with readelf on the x86_64 wheel).
  nativeBuildInputs = (old.nativeBuildInputs or [ ]) ++ lib.optionals stdenv.hostPlatform.isLinux [ autoPatchelfHook ];
  buildInputs = (old.buildInputs or [ ]) ++ lib.optionals stdenv.hostPlatform.isLinux [ stdenv.cc.cc.lib ];

  # The proxy (`litellm --config ...`) is what gauntlet runs, so the proxy extra is installed.
  dependencies = resolve coreNames ++ proxyDeps;
  optional-dependencies = (old.optional-dependencies or { }) // {
    proxy = proxyDeps;
  };

  # nixpkgs' versions do not meet every floor LiteLLM 1.100.5 declares (openai>=2.20,
  # boto3>=1.43.1, aiohttp>=3.14.2, ...). Relax them rather than fail; the integration suites
  # are what proves the combination works.
  pythonRelaxDeps = true;
  dontCheckRuntimeDeps = true;

  # Upstream tests need network and provider keys.
  doCheck = false;
  # Importing litellm fetches the model price map from GitHub unless told not to.
  env = (old.env or { }) // {
    LITELLM_LOCAL_MODEL_COST_MAP = "True";
  };
  pythonImportsCheck = [ "litellm" ];

  passthru = (old.passthru or { }) // {
    inherit
      missingDeps
      litellm-proxy-extras
      litellm-enterprise
      wheel
      ;
  };

  meta = (old.meta or { }) // {
    mainProgram = "litellm";
    changelog = "https://github.com/BerriAI/litellm/releases/tag/v${version}";
  };
})
