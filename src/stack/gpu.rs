//! Is there an NVIDIA GPU here? The GPU lane runs only where one exists; elsewhere its cases
//! are listed as ignored with the reason, and the simulator stands in for vLLM.
//!
//! Three witnesses on the host, cheapest first: the kernel driver's proc file, NVML (the
//! library `nvidia-smi` itself reads, present where a container runtime mounts the driver but
//! no `nvidia-smi`), and `nvidia-smi -L`. For the Docker backend the engine is a witness too:
//! a remote engine (`DOCKER_HOST`) on a GPU host offers the `nvidia` runtime, or CDI devices.

use std::path::Path;

use super::backend::kind::BackendKind;

/// Why the GPU lane is ignored on a machine without a GPU (the host's witnesses).
pub const NO_GPU: &str = "no NVIDIA GPU: /proc/driver/nvidia/version absent and nvidia-smi lists none";

/// The kernel driver is loaded (its proc file exists), NVML counts a device, or `nvidia-smi`
/// lists one.
pub fn nvidia_driver_present() -> bool {
    if Path::new("/proc/driver/nvidia/version").exists() {
        return true;
    }
    if nvml_device_count().is_some_and(|n| n > 0) {
        return true;
    }
    std::process::Command::new("nvidia-smi")
        .arg("-L")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("GPU"))
}

/// Devices NVML sees, or `None` when the library is absent or fails to initialise.
fn nvml_device_count() -> Option<u32> {
    type Init = unsafe extern "C" fn() -> i32;
    type Count = unsafe extern "C" fn(*mut u32) -> i32;
    const NVML_SUCCESS: i32 = 0;
    // SAFETY: dlopen/dlsym with NUL-terminated names; the symbols are NVML's documented C
    // entry points with these signatures (nvmlReturn_t is a C enum, an int). The handle is
    // never closed: NVML may keep threads that still refer to its code.
    unsafe {
        let lib = libc::dlopen(c"libnvidia-ml.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if lib.is_null() {
            return None;
        }
        let init = libc::dlsym(lib, c"nvmlInit_v2".as_ptr());
        let count = libc::dlsym(lib, c"nvmlDeviceGetCount_v2".as_ptr());
        let shutdown = libc::dlsym(lib, c"nvmlShutdown".as_ptr());
        if init.is_null() || count.is_null() || shutdown.is_null() {
            return None;
        }
        let init: Init = std::mem::transmute::<*mut libc::c_void, Init>(init);
        let count: Count = std::mem::transmute::<*mut libc::c_void, Count>(count);
        let shutdown: Init = std::mem::transmute::<*mut libc::c_void, Init>(shutdown);
        if init() != NVML_SUCCESS {
            return None;
        }
        let mut n = 0u32;
        let ok = count(&mut n) == NVML_SUCCESS;
        shutdown();
        ok.then_some(n)
    }
}

/// What the Docker Engine can hand a container: the `nvidia` runtime is registered, and
/// whether it has CDI spec folders. `None` when the engine does not answer.
fn engine_gpu_support() -> Option<(bool, bool)> {
    super::engine::blocking(|docker| {
        Box::pin(async move {
            let info = docker.info().await.ok()?;
            let nvidia = info.runtimes.unwrap_or_default().contains_key("nvidia");
            let cdi = info.cdi_spec_dirs.is_some_and(|d| !d.is_empty());
            Some((nvidia, cdi))
        })
    })
    .flatten()
}

/// Why a service asking for `request` (`"all"`, a count, `"cdi:<device>"`) gets no GPU on
/// `backend`, if it gets none — the same witnesses the Docker backend checks before it starts
/// anything, asked before the cases are listed.
pub fn unavailable(backend: BackendKind, request: &str) -> Option<String> {
    let host = nvidia_driver_present();
    match backend {
        BackendKind::Process => (!host).then(|| NO_GPU.to_owned()),
        BackendKind::Docker => {
            let cdi = request.starts_with("cdi:");
            if host && !cdi {
                return None;
            }
            let (nvidia, specs) = match engine_gpu_support() {
                Some(s) => s,
                None => return Some(format!("{NO_GPU}, and the Docker Engine does not answer")),
            };
            match (cdi, nvidia, specs) {
                (false, true, _) | (true, _, true) => None,
                (false, false, _) => Some(format!("{NO_GPU}, and the Docker Engine has no nvidia runtime")),
                (true, _, false) => Some(format!(
                    "gpu = {request:?} asks for a CDI device and the Docker Engine has no CDI spec folders"
                )),
            }
        }
    }
}
