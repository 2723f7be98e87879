//! wgpu backend: one device, a pipeline cache, a buffer pool, and a command list that
//! a training step records once and replays as one submission.

use std::sync::Mutex;
use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use wgpu::util::DeviceExt;

use super::Buf;

/// A WGSL source file from `shaders/`, embedded at compile time.
#[derive(Clone, Copy, Debug)]
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
}

/// Embed `shaders/<name>.wgsl`.
#[macro_export]
macro_rules! shader {
    ($name:literal) => {
        $crate::backend::gpu::Shader {
            name: $name,
            // shaders/common.wgsl first: the helpers every kernel may use
            source: concat!(
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/common.wgsl")),
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $name, ".wgsl"))
            ),
        }
    };
}

/// Threads per workgroup used by every 1-D kernel (`@workgroup_size(256)`).
pub const WG: u32 = 256;

/// One recorded GPU command. A step is a list of these, replayed into one encoder.
pub enum Cmd {
    Dispatch { pipeline: wgpu::ComputePipeline, bind_group: wgpu::BindGroup, groups: [u32; 3] },
    Clear { buf: Buf },
    Copy { src: Buf, dst: Buf, len: usize },
}

pub struct Gpu {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub limits: wgpu::Limits,
    pub info: wgpu::AdapterInfo,
    pub timestamps: bool,
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
        .with_context(|| format!("opening device on adapter {}", info.name))?;
        Ok(Gpu {
            adapter,
            device,
            queue,
            limits,
            info,
            timestamps,
            pipelines: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
        })
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
                        source: wgpu::ShaderSource::Wgsl(shader.source.into()),
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
            bail!("shader {}.wgsl, entry {entry}: {err}", shader.name);
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
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| anyhow!("poll: {e}"))?;
        rx.recv()?.map_err(|e| anyhow!("map: {e}"))?;
        let view = staging.get_mapped_range(..).map_err(|e| anyhow!("mapped range: {e:?}"))?;
        let out = bytemuck::cast_slice::<u8, f32>(&view).to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
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
pub struct Recorder<'a> {
    pub gpu: &'a Gpu,
    pub bufs: &'a [wgpu::Buffer],
    pub cmds: &'a mut Vec<Cmd>,
}

impl Recorder<'_> {
    /// Record one dispatch of `entry` in `shader`.
    /// Binding 0 is the uniform `params` (u32 words; floats go in as `f32::to_bits`),
    /// bindings 1.. are the storage buffers in the order given. Every binding listed
    /// must be used by the entry point (the pipeline layout is derived from the shader).
    pub fn dispatch(&mut self, shader: Shader, entry: &'static str, params: &[u32], bufs: &[Buf], groups: [u32; 3]) {
        if groups.contains(&0) {
            return;
        }
        let pipeline = self.gpu.pipeline(shader, entry).unwrap_or_else(|e| panic!("{e:#}"));
        let mut words = params.to_vec();
        words.resize(params.len().max(1).next_multiple_of(4), 0);
        let uniform = self.gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::cast_slice(&words),
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
            panic!("bind group for {}.wgsl entry {entry}: {err}", shader.name);
        }
        self.cmds.push(Cmd::Dispatch { pipeline, bind_group, groups });
    }

    /// Record a 1-D dispatch covering `n` threads of `WG` each.
    pub fn dispatch_1d(&mut self, shader: Shader, entry: &'static str, params: &[u32], bufs: &[Buf], n: usize) {
        if n == 0 {
            return;
        }
        let groups = self.gpu.split_groups((n as u32).div_ceil(WG));
        self.dispatch(shader, entry, params, bufs, groups);
    }

    pub fn clear(&mut self, buf: Buf) {
        self.cmds.push(Cmd::Clear { buf });
    }

    pub fn copy(&mut self, src: Buf, dst: Buf) {
        self.cmds.push(Cmd::Copy { src, dst, len: src.len.min(dst.len) });
    }
}

/// Float params travel as raw bits in the u32 params block.
pub fn f(x: f32) -> u32 {
    x.to_bits()
}
