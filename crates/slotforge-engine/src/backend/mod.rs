//! Devices. An op runs against a [`Ctx`]: on the CPU it computes at once on slices;
//! on wgpu it records dispatches that the executor replays every step.

pub mod cpu;
pub mod gpu;
pub mod select;

pub use cpu::CpuStore;
pub use gpu::{Gpu, Recorder, Shader};
pub(crate) use gpu::shader;
pub use select::{list_adapters, open_any_gpu, open_device, DeviceKind};

use std::sync::Arc;

/// A handle to a flat f32 buffer owned by the executor's store: its index there and its
/// length in floats (a kernel's bounds come from `len`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Buf {
    pub id: usize,
    pub len: usize,
}

/// The device a graph runs on.
#[derive(Clone, Debug)]
pub enum Device {
    Cpu,
    Gpu(Arc<Gpu>),
}

impl Device {
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu (native)".to_string(),
            Device::Gpu(g) => format!("{} ({:?}, {:?})", g.info.name, g.info.backend, g.info.device_type),
        }
    }
    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Gpu(_))
    }
}

/// Where an op's forward/backward runs.
pub enum Ctx<'a> {
    Cpu(&'a mut CpuStore),
    Gpu(Recorder<'a>),
}
