//! Where an encoder runs and in what arithmetic: the `--device` / `--precision` flag group that
//! every command that encodes or trains flattens in, resolved once into a [`Runtime`].
//!
//! - `--device auto` (the default): the first CUDA GPU when this binary has CUDA compiled in
//!   (`--features cuda`) and one is visible, else the CPU; `cpu`; `cuda` (= `cuda:0`); `cuda:N`.
//! - `--precision f32 | bf16 | f16` [default: f32 on the CPU, bf16 on a GPU that has it
//!   (compute capability 8.0 or newer), else f32]. Reduced precision is mixed precision: see
//!   [`super::layers`] (what runs in f32) and the training loop (f32 master weights, loss scaling
//!   for f16).
//!
//! A CUDA request that cannot be met ends with one sentence saying why (a CPU-only build, no
//! driver, no GPU, no such ordinal). CUDA devices are opened once per process and shared, so the
//! encoder and the exact search see the same device.

use std::fmt;
use std::str::FromStr;

use anyhow::Result;
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// A CUDA GPU when compiled in and visible, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// CUDA GPU N.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => match t.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) if n < 1024 => Ok(DeviceSpec::Cuda(n)),
                _ => Err(format!(
                    "`{s}` is not a device: expected auto, cpu, cuda or cuda:N (N a GPU ordinal)"
                )),
            },
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// `--precision`: the arithmetic of the forward and backward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    /// bfloat16 (f32's range, 8 bits of mantissa): no loss scaling needed.
    Bf16,
    /// IEEE half: training scales the loss dynamically (steps with inf/NaN gradients skipped).
    F16,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

/// The device flag group (flattened into every config that encodes or trains).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
pub struct DeviceArgs {
    /// Where to run: auto (a CUDA GPU when this build has CUDA and one is visible, else the
    /// CPU), cpu, cuda (GPU 0) or cuda:N
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    #[serde(default)]
    pub device: DeviceSpec,
    /// Arithmetic of the model (mixed precision: f32 master weights, optimizer state, layer
    /// norms, softmax and loss) [default: f32 on the CPU, bf16 on a GPU that has it]
    #[arg(long, value_enum)]
    #[serde(default)]
    pub precision: Option<Precision>,
}

crate::cli::clap_default!(DeviceArgs);

/// A resolved device and precision.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub device: Device,
    pub precision: Precision,
    /// What ran, for records and summaries: `cpu`, `cuda:0 (NVIDIA H200, sm_90)`.
    pub name: String,
}

/// What a record says of the runtime that produced it (index model record, training_args.json).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    pub device: String,
    pub precision: Precision,
}

impl Default for RuntimeInfo {
    fn default() -> Self {
        RuntimeInfo {
            device: "cpu".into(),
            precision: Precision::F32,
        }
    }
}

impl Runtime {
    pub fn cpu(precision: Precision) -> Self {
        Runtime {
            device: Device::Cpu,
            precision,
            name: "cpu".into(),
        }
    }
    pub fn info(&self) -> RuntimeInfo {
        RuntimeInfo {
            device: self.name.clone(),
            precision: self.precision,
        }
    }
}

impl DeviceArgs {
    pub fn cpu() -> Self {
        DeviceArgs {
            device: DeviceSpec::Cpu,
            precision: None,
        }
    }

    /// Opens the device; errors in one sentence when a CUDA request cannot be met.
    pub fn resolve(&self) -> Result<Runtime> {
        let gpu = match self.device {
            DeviceSpec::Cpu => None,
            DeviceSpec::Cuda(n) => Some(
                cuda::open(n).map_err(|why| anyhow::anyhow!("--device {}: {why}", self.device))?,
            ),
            DeviceSpec::Auto => cuda::open(0).ok(),
        };
        Ok(match gpu {
            None => Runtime::cpu(self.precision.unwrap_or_default()),
            Some(g) => Runtime {
                precision: self.precision.unwrap_or(if g.bf16 {
                    Precision::Bf16
                } else {
                    Precision::F32
                }),
                device: g.device,
                name: g.name,
            },
        })
    }
}

/// An opened GPU.
#[allow(dead_code)] // constructed only with the `cuda` feature
#[derive(Clone)]
struct Gpu {
    device: Device,
    name: String,
    /// Compute capability 8.0 or newer (bf16 tensor cores).
    bf16: bool,
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    pub(super) fn open(_ordinal: usize) -> Result<super::Gpu, String> {
        Err(
            "this recsys was built without CUDA; build one with `make build-cuda` (or `cargo \
             build --release --features cuda`) to run on a GPU"
                .into(),
        )
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    use candle_core::Device;
    use candle_core::cuda_backend::cudarc::driver::{CudaContext, sys};

    use super::Gpu;

    /// Devices opened so far, by ordinal: one candle device per GPU per process (tensors of
    /// two candle devices on the same GPU cannot meet in one op).
    static OPEN: OnceLock<Mutex<HashMap<usize, Gpu>>> = OnceLock::new();

    fn driver_error(e: &dyn std::fmt::Debug) -> String {
        let e = format!("{e:?}");
        if e.contains("STUB_LIBRARY") {
            "no CUDA GPU is available: this machine has no NVIDIA driver (libcuda.so.1 is the \
             bundle's stand-in)"
                .into()
        } else if e.contains("NO_DEVICE") {
            "no CUDA GPU is available: the NVIDIA driver sees no GPU".into()
        } else if e.contains("INSUFFICIENT_DRIVER") {
            "no CUDA GPU is available: the NVIDIA driver is older than CUDA 13.0".into()
        } else {
            format!("no CUDA GPU is available (CUDA driver: {e})")
        }
    }

    pub(super) fn open(ordinal: usize) -> Result<Gpu, String> {
        let open = OPEN.get_or_init(Default::default);
        let mut open = open
            .lock()
            .map_err(|_| "the device table is poisoned".to_string())?;
        if let Some(gpu) = open.get(&ordinal) {
            return Ok(gpu.clone());
        }
        let n = CudaContext::device_count().map_err(|e| driver_error(&e))?;
        if n <= 0 {
            return Err("no CUDA GPU is available: the NVIDIA driver sees no GPU".into());
        }
        if ordinal >= n as usize {
            return Err(format!(
                "this machine has {n} CUDA GPU{} (cuda:0{})",
                if n == 1 { "" } else { "s" },
                if n > 1 {
                    format!(" … cuda:{}", n - 1)
                } else {
                    String::new()
                }
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| driver_error(&e))?;
        let attr = |a| ctx.attribute(a).unwrap_or(0);
        let (major, minor) = (
            attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
            attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
        );
        let model = ctx.name().unwrap_or_else(|_| "GPU".into());
        let device = Device::new_cuda(ordinal)
            .map_err(|e| format!("opening CUDA GPU {ordinal} ({model}): {e}"))?;
        let gpu = Gpu {
            device,
            name: format!("cuda:{ordinal} ({model}, sm_{major}{minor})"),
            bf16: major >= 8,
        };
        open.insert(ordinal, gpu.clone());
        Ok(gpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs_parse_and_print() {
        for (s, d) in [
            ("auto", DeviceSpec::Auto),
            ("cpu", DeviceSpec::Cpu),
            ("CUDA", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
        ] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap(), d);
            assert_eq!(d.to_string().parse::<DeviceSpec>().unwrap(), d);
        }
        for bad in ["", "cuda:", "cuda:-1", "cuda:x", "tpu", "cuda:99999"] {
            let e = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(
                e.contains("expected auto, cpu, cuda or cuda:N"),
                "{bad}: {e}"
            );
        }
        let j = serde_json::to_string(&DeviceArgs::default()).unwrap();
        assert_eq!(j, r#"{"device":"auto","precision":null}"#);
        // records written before this flag group said "cpu" / "cuda"
        let old: DeviceArgs = serde_json::from_str(r#"{"device":"cuda"}"#).unwrap();
        assert_eq!(old.device, DeviceSpec::Cuda(0));
    }

    /// (A CUDA build may see a GPU here: this is the CPU build's behaviour.)
    #[test]
    #[cfg(not(feature = "cuda"))]
    fn auto_is_the_cpu_without_a_gpu_and_precision_defaults_follow_the_device() {
        let rt = DeviceArgs::default().resolve().unwrap();
        assert!(rt.device.is_cpu());
        assert_eq!((rt.precision, rt.name.as_str()), (Precision::F32, "cpu"));
        let bf16 = DeviceArgs {
            precision: Some(Precision::Bf16),
            ..DeviceArgs::cpu()
        };
        assert_eq!(bf16.resolve().unwrap().precision, Precision::Bf16);
        let e = DeviceArgs {
            device: DeviceSpec::Cuda(1),
            precision: None,
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("--device cuda:1: this recsys was built without CUDA"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }
}
