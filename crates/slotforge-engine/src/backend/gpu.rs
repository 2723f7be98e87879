//! wgpu backend: one device, a pipeline cache, a buffer pool, and a command list that
//! a training step records once and replays as one submission.

use std::sync::Mutex;
use std::collections::HashMap;

use wgpu::util::DeviceExt;

use super::Buf;
use crate::error::{Error, Result};

/// `shaders/common.wgsl`: helpers every kernel may use, put in front of every shader.
pub const COMMON_WGSL: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shaders/common.wgsl"));

/// A WGSL file of `shaders/`, embedded by the crate that owns the op:
/// `Shader::new("cosine", include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/cosine.wgsl")))`.
#[derive(Clone, Copy, Debug)]
pub struct Shader {
    name: &'static str,
    body: &'static str,
}

impl Shader {
    pub const fn new(name: &'static str, body: &'static str) -> Shader {
        Shader { name, body }
    }
    pub fn name(&self) -> &'static str {
        self.name
    }
    /// The module as compiled: `common.wgsl`, then the file.
    pub fn source(&self) -> String {
        format!("{COMMON_WGSL}{}", self.body)
    }
}

/// Embed `shaders/<name>.wgsl` of the repository (the engine's own ops).
macro_rules! shader {
    ($name:literal) => {
        $crate::backend::Shader::new(
            $name,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shaders/", $name, ".wgsl")),
        )
    };
}
pub(crate) use shader;

/// Threads per workgroup used by every 1-D kernel (`@workgroup_size(256)`).
pub const WG: u32 = 256;

/// One recorded GPU command. A step is a list of these, replayed into one encoder.
pub enum Cmd {
    Dispatch { pipeline: wgpu::ComputePipeline, bind_group: wgpu::BindGroup, groups: [u32; 3] },
    Clear { buf: Buf },
    Copy { src: Buf, dst: Buf, len: usize },
}

pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pub(crate) limits: wgpu::Limits,
    pub(crate) info: wgpu::AdapterInfo,
    timestamps: bool,
    pipelines: Mutex<HashMap<(&'static str, &'static str), wgpu::ComputePipeline>>,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({} / {:?})", self.info.name, self.info.backend)
    }
}

impl Gpu {
    /// Open the adapter, asking for the adapter's own limits (not wgpu's small defaults).
    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Gpu> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let timestamps = adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let required_features =
            if timestamps { wgpu::Features::TIMESTAMP_QUERY } else { wgpu::Features::empty() };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("slotforge"),
            required_features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|source| Error::RequestDevice { adapter: info.name.clone(), source })?;
        Ok(Gpu {
            device,
            queue,
            limits,
            info,
            timestamps,
            pipelines: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
        })
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }
    /// The device was opened with TIMESTAMP_QUERY (benchmarks time compute passes).
    pub fn has_timestamps(&self) -> bool {
        self.timestamps
    }
    /// A CPU implementation of the API (lavapipe, WARP, llvmpipe).
    pub fn is_cpu_emulated(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    pub fn create_buffer(&self, len: usize, label: &str) -> wgpu::Buffer {
        // Zero-length tensors still get a 4-byte buffer: wgpu rejects empty bindings.
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (len.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Compile (once) the pipeline for `entry` of `shader`; WGSL errors name the shader.
    pub fn pipeline(&self, shader: Shader, entry: &'static str) -> Result<wgpu::ComputePipeline> {
        if let Some(p) = self.pipelines.lock().unwrap().get(&(shader.name, entry)) {
            return Ok(p.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = {
            let mut modules = self.modules.lock().unwrap();
            modules
                .entry(shader.name)
                .or_insert_with(|| {
                    self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(shader.name),
                        source: wgpu::ShaderSource::Wgsl(shader.source().into()),
                    })
                })
                .clone()
        };
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(Error::Shader { shader: shader.name, entry, message: err.to_string() });
        }
        self.pipelines.lock().unwrap().insert((shader.name, entry), pipeline.clone());
        Ok(pipeline)
    }

    /// Split `n` workgroups over x and y so no dimension exceeds the device limit.
    /// Kernels linearize with `wid.x + wid.y * nwg.x` and bounds-check the tail.
    pub fn split_groups(&self, n: u32) -> [u32; 3] {
        let max = self.limits.max_compute_workgroups_per_dimension.max(1);
        if n <= max {
            [n, 1, 1]
        } else {
            let y = n.div_ceil(max);
            [n.div_ceil(y), y, 1]
        }
    }

    pub fn upload(&self, buf: &wgpu::Buffer, data: &[f32]) {
        if !data.is_empty() {
            self.queue.write_buffer(buf, 0, bytemuck::cast_slice(data));
        }
    }

    /// Read back `len` floats (blocks until the queue is idle).
    pub fn download(&self, buf: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let size = (len * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, 0, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        let mapped = rx.recv().map_err(|e| Error::Readback(format!("map callback: {e}")))?;
        mapped.map_err(|e| Error::Readback(format!("map: {e}")))?;
        let view = staging.get_mapped_range(..).map_err(|e| Error::Readback(format!("mapped range: {e:?}")))?;
        let out = bytemuck::cast_slice::<u8, f32>(&view).to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// Block until the queue is idle.
    pub fn wait(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Readback(format!("poll: {e}")))?;
        Ok(())
    }

    /// Encode `cmds` into one command buffer and submit it.
    pub fn submit(&self, bufs: &[wgpu::Buffer], cmds: &[Cmd]) {
        let mut enc = self.device.create_command_encoder(&Default::default());
        encode(&mut enc, bufs, cmds);
        self.queue.submit([enc.finish()]);
    }
}

/// Consecutive dispatches share one compute pass (wgpu orders them by usage);
/// clears and copies sit between passes.
pub fn encode(enc: &mut wgpu::CommandEncoder, bufs: &[wgpu::Buffer], cmds: &[Cmd]) {
    encode_with_timestamps(enc, bufs, cmds, |_| None);
}

/// [`encode`], asking `timestamps(pass index)` for the timestamp writes of each compute pass
/// (the kernel benchmarks time every pass). Returns the number of compute passes.
pub fn encode_with_timestamps<'q>(
    enc: &mut wgpu::CommandEncoder,
    bufs: &[wgpu::Buffer],
    cmds: &[Cmd],
    timestamps: impl Fn(u32) -> Option<wgpu::ComputePassTimestampWrites<'q>>,
) -> u32 {
    let mut i = 0;
    let mut pass_index = 0u32;
    while i < cmds.len() {
        match &cmds[i] {
            Cmd::Clear { buf } => {
                enc.clear_buffer(&bufs[buf.id], 0, None);
                i += 1;
            }
            Cmd::Copy { src, dst, len } => {
                if *len > 0 {
                    enc.copy_buffer_to_buffer(&bufs[src.id], 0, &bufs[dst.id], 0, (*len * 4) as u64);
                }
                i += 1;
            }
            Cmd::Dispatch { .. } => {
                let desc = wgpu::ComputePassDescriptor { label: None, timestamp_writes: timestamps(pass_index) };
                let mut pass = enc.begin_compute_pass(&desc);
                while let Some(Cmd::Dispatch { pipeline, bind_group, groups }) = cmds.get(i) {
                    pass.set_pipeline(pipeline);
                    pass.set_bind_group(0, bind_group, &[]);
                    pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                    i += 1;
                }
                pass_index += 1;
            }
        }
    }
    pass_index
}

/// What an op sees when it runs on the GPU: it records commands, it does not run them.
///
/// Recording never panics on a device failure: the first failure (a shader the device
/// rejects, buffers that do not fit the bindings) is kept here, later dispatches are
/// skipped, and the executor returns it from the call that ran the program. So an op's
/// forward and backward stay plain lists of dispatches.
pub struct Recorder<'a> {
    pub(crate) gpu: &'a Gpu,
    pub(crate) bufs: &'a [wgpu::Buffer],
    pub(crate) cmds: &'a mut Vec<Cmd>,
    pub(crate) error: &'a mut Option<Error>,
}

impl Recorder<'_> {
    pub fn gpu(&self) -> &Gpu {
        self.gpu
    }

    /// Split `n` workgroups over x and y (see [`Gpu::split_groups`]). More than the device
    /// can take is kept as an error, and the dispatch is skipped (no groups).
    pub fn split_groups(&mut self, n: usize) -> [u32; 3] {
        let max = self.gpu.limits.max_compute_workgroups_per_dimension.max(1) as usize;
        match u32::try_from(n) {
            Ok(n32) if n <= max * max => self.gpu.split_groups(n32),
            _ => {
                self.error.get_or_insert(Error::TooLarge("workgroup count"));
                [0; 3]
            }
        }
    }

    /// Record one dispatch of `entry` in `shader` with the kernel parameters `params`
    /// (binding 0, a uniform: a `#[repr(C)]` struct declared with [`kernel_params!`](crate::kernel_params));
    /// bindings 1.. are the storage buffers in the order given. Every binding listed must
    /// be used by the entry point (the pipeline layout is derived from the shader).
    pub fn dispatch<P: bytemuck::Pod>(&mut self, shader: Shader, entry: &'static str, params: &P, bufs: &[Buf], groups: [u32; 3]) {
        if groups.contains(&0) || self.error.is_some() {
            return;
        }
        if let Err(e) = self.try_dispatch(shader, entry, bytemuck::bytes_of(params), bufs, groups) {
            *self.error = Some(e);
        }
    }

    fn try_dispatch(&mut self, shader: Shader, entry: &'static str, params: &[u8], bufs: &[Buf], groups: [u32; 3]) -> Result<()> {
        let pipeline = self.gpu.pipeline(shader, entry)?;
        // a uniform block is a multiple of 16 bytes
        let mut bytes = params.to_vec();
        bytes.resize(params.len().max(1).next_multiple_of(16), 0);
        let uniform = self.gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: &bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
        for (i, b) in bufs.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: self.bufs[b.id].as_entire_binding(),
            });
        }
        let scope = self.gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bind_group = self.gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(Error::BindGroup { shader: shader.name, entry, message: err.to_string() });
        }
        self.cmds.push(Cmd::Dispatch { pipeline, bind_group, groups });
        Ok(())
    }

    /// Record a 1-D dispatch covering `n` threads of `WG` each.
    pub fn dispatch_1d<P: bytemuck::Pod>(&mut self, shader: Shader, entry: &'static str, params: &P, bufs: &[Buf], n: usize) {
        if n == 0 {
            return;
        }
        let groups = self.split_groups(n.div_ceil(WG as usize));
        self.dispatch(shader, entry, params, bufs, groups);
    }

    pub fn clear(&mut self, buf: Buf) {
        self.cmds.push(Cmd::Clear { buf });
    }

    pub fn copy(&mut self, src: Buf, dst: Buf) {
        self.cmds.push(Cmd::Copy { src, dst, len: src.len.min(dst.len) });
    }
}
