//! Choosing a device: `auto|cpu|vulkan|metal|dx12|gl`.

use std::sync::Arc;

use super::{Device, Gpu};
use crate::error::{Error, Result};

/// Which device to open. Parses from (and with the `serde` feature serializes to) the
/// lowercase names `auto|cpu|vulkan|metal|dx12|gl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize), serde(rename_all = "lowercase"))]
pub enum DeviceKind {
    Auto,
    Cpu,
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl DeviceKind {
    pub const ALL: [DeviceKind; 6] =
        [DeviceKind::Auto, DeviceKind::Cpu, DeviceKind::Vulkan, DeviceKind::Metal, DeviceKind::Dx12, DeviceKind::Gl];

    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Auto => "auto",
            DeviceKind::Cpu => "cpu",
            DeviceKind::Vulkan => "vulkan",
            DeviceKind::Metal => "metal",
            DeviceKind::Dx12 => "dx12",
            DeviceKind::Gl => "gl",
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DeviceKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| Error::UnknownDevice(s.to_string()))
    }
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

fn adapters(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    pollster::block_on(instance().enumerate_adapters(backends))
}

/// Every adapter wgpu can see, one line each: backend, type, name, key limits.
pub fn list_adapters() -> Vec<String> {
    adapters(wgpu::Backends::all())
        .iter()
        .map(|a| {
            let i = a.get_info();
            let l = a.limits();
            format!(
                "{:?}\t{:?}\t{}\tdriver={} {}\tmax_buffer={} MiB\tmax_storage_binding={} MiB\tmax_workgroups_per_dim={}\tmax_invocations={}\tworkgroup_mem={} KiB\ttimestamps={}",
                i.backend,
                i.device_type,
                i.name,
                i.driver,
                i.driver_info,
                l.max_buffer_size >> 20,
                l.max_storage_buffer_binding_size >> 20,
                l.max_compute_workgroups_per_dimension,
                l.max_compute_invocations_per_workgroup,
                l.max_compute_workgroup_storage_size >> 10,
                a.features().contains(wgpu::Features::TIMESTAMP_QUERY),
            )
        })
        .collect()
}

/// Open the device asked for. Returns the device and a sentence saying why it was chosen.
/// `auto` takes a real GPU (discrete, integrated or virtual) when there is one; a CPU
/// rasterizer such as lavapipe is slower than the native CPU backend, so `auto` skips it.
pub fn open_device(kind: DeviceKind) -> Result<(Device, String)> {
    let want = match kind {
        DeviceKind::Cpu => return Ok((Device::Cpu, "cpu requested".into())),
        DeviceKind::Auto => {
            let mut found = adapters(wgpu::Backends::all());
            found.retain(|a| {
                matches!(
                    a.get_info().device_type,
                    wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu | wgpu::DeviceType::VirtualGpu
                )
            });
            found.sort_by_key(|a| match a.get_info().device_type {
                wgpu::DeviceType::DiscreteGpu => 0,
                wgpu::DeviceType::IntegratedGpu => 1,
                _ => 2,
            });
            return match found.into_iter().next() {
                Some(a) => {
                    let why = format!("auto: took GPU {} ({:?})", a.get_info().name, a.get_info().backend);
                    Ok((Device::Gpu(Arc::new(Gpu::from_adapter(a)?)), why))
                }
                None => Ok((
                    Device::Cpu,
                    "auto: no hardware GPU adapter found, using the native CPU backend".into(),
                )),
            };
        }
        DeviceKind::Vulkan => wgpu::Backends::VULKAN,
        DeviceKind::Metal => wgpu::Backends::METAL,
        DeviceKind::Dx12 => wgpu::Backends::DX12,
        DeviceKind::Gl => wgpu::Backends::GL,
    };
    let mut found = adapters(want);
    // Prefer real GPUs over CPU implementations of the same API.
    found.sort_by_key(|a| (a.get_info().device_type == wgpu::DeviceType::Cpu) as u8);
    match found.into_iter().next() {
        Some(a) => {
            let why = format!("{kind:?} requested: took {} ({:?})", a.get_info().name, a.get_info().device_type);
            Ok((Device::Gpu(Arc::new(Gpu::from_adapter(a)?)), why))
        }
        None => Err(Error::NoAdapter(format!("{kind:?}"))),
    }
}

/// Any wgpu adapter at all, hardware first, then CPU implementations such as lavapipe.
/// The GPU tests use this: they must run the shaders somewhere, and fail if they cannot.
pub fn open_any_gpu() -> Result<Gpu> {
    let mut found = adapters(wgpu::Backends::all());
    // ties go to the native APIs: the GL path of a CPU rasterizer can deadlock under load
    found.sort_by_key(|a| {
        let info = a.get_info();
        let kind = match info.device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Cpu => 3,
            wgpu::DeviceType::Other => 4,
        };
        (kind, info.backend == wgpu::Backend::Gl)
    });
    match found.into_iter().next() {
        Some(a) => Gpu::from_adapter(a),
        None => Err(Error::NoAdapter("wgpu".into())),
    }
}
