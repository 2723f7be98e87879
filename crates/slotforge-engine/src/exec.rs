//! The executor: owns a buffer for every variable, gradient and saved tensor of a graph
//! (allocated once, reused every step), and runs programs on the device.
//!
//! A program is a function that calls ops against a [`Ctx`]. On the CPU it simply runs.
//! On wgpu it runs once to *record* a command list, which is cached under its name and
//! replayed as a single submission every later time: the graph is static, so the
//! commands are too. Only data that changes per step (inputs, learning rate) is
//! uploaded, and only what the host asks for is read back.

use std::collections::HashMap;

use crate::backend::gpu::Cmd;
use crate::backend::{Buf, CpuStore, Ctx, Device, Recorder};
use crate::error::{Error, Result};
use crate::graph::{Graph, Var};

enum Store {
    Cpu(CpuStore),
    Gpu { bufs: Vec<wgpu::Buffer>, programs: HashMap<&'static str, Vec<Cmd>> },
}

/// Buffer of every variable, gradient and saved tensor.
#[derive(Clone, Debug)]
pub struct Layout {
    value: Vec<Buf>,
    grad: Vec<Option<Buf>>,
    saved: Vec<Buf>,
    /// Holds the seed of the backward pass (dL/dL = 1, or a given upstream gradient).
    seed: Buf,
}

impl Layout {
    /// The buffer holding the value of `v`.
    pub fn value(&self, v: Var) -> Buf {
        self.value[v.index()]
    }
    /// The buffer holding dL/dv, if `v` needs a gradient.
    pub fn grad(&self, v: Var) -> Option<Buf> {
        self.grad[v.index()]
    }
    /// The floats node `i` saved for its backward pass.
    pub fn saved(&self, node: usize) -> Buf {
        self.saved[node]
    }
    /// The buffer of the backward pass's seed (as long as the largest variable).
    pub fn seed(&self) -> Buf {
        self.seed
    }
}

pub struct Executor {
    graph: Graph,
    device: Device,
    layout: Layout,
    allocated_bytes: usize,
    store: Store,
}

impl Executor {
    /// Allocate every buffer of `graph` on `device`. Fails with the graph's first shape error.
    pub fn new(graph: Graph, device: Device) -> Result<Executor> {
        graph.check()?;
        let store = match &device {
            Device::Cpu => Store::Cpu(CpuStore::default()),
            Device::Gpu(_) => Store::Gpu { bufs: Vec::new(), programs: HashMap::new() },
        };
        let mut ex = Executor {
            graph,
            device,
            store,
            allocated_bytes: 0,
            layout: Layout { value: vec![], grad: vec![], saved: vec![], seed: Buf { id: 0, len: 0 } },
        };
        let max_len = ex.graph.vars().map(|(_, v)| v.len()).max().unwrap_or(0);
        let lens: Vec<(usize, bool)> = ex.graph.vars().map(|(_, v)| (v.len(), v.needs_grad)).collect();
        for (len, needs_grad) in lens {
            let v = ex.alloc(len);
            let g = if needs_grad { Some(ex.alloc(len)) } else { None };
            ex.layout.value.push(v);
            ex.layout.grad.push(g);
        }
        let saved: Vec<usize> = ex.graph.nodes().iter().map(|n| n.op().saved_len()).collect();
        for len in saved {
            let b = ex.alloc(len);
            ex.layout.saved.push(b);
        }
        ex.layout.seed = ex.alloc(max_len);
        Ok(ex)
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    /// Bytes of every buffer this executor allocated (its device memory footprint).
    pub fn allocated_bytes(&self) -> usize {
        self.allocated_bytes
    }

    /// A new zeroed buffer on the executor's device (optimizer state, scratch).
    pub fn alloc(&mut self, len: usize) -> Buf {
        self.allocated_bytes += len * 4;
        match (&mut self.store, &self.device) {
            (Store::Cpu(s), _) => s.alloc(len),
            (Store::Gpu { bufs, .. }, Device::Gpu(g)) => {
                let id = bufs.len();
                bufs.push(g.create_buffer(len, "slotforge"));
                Buf { id, len }
            }
            _ => unreachable!(),
        }
    }

    pub fn write(&mut self, b: Buf, data: &[f32]) -> Result<()> {
        if b.len != data.len() {
            return Err(Error::Length { what: format!("buffer {}", b.id), expected: b.len, got: data.len() });
        }
        match (&mut self.store, &self.device) {
            (Store::Cpu(s), _) => s.get_mut(b).copy_from_slice(data),
            (Store::Gpu { bufs, .. }, Device::Gpu(g)) => g.upload(&bufs[b.id], data),
            _ => unreachable!(),
        }
        Ok(())
    }

    pub fn read(&self, b: Buf) -> Result<Vec<f32>> {
        match (&self.store, &self.device) {
            (Store::Cpu(s), _) => Ok(s.get(b).to_vec()),
            (Store::Gpu { bufs, .. }, Device::Gpu(g)) => g.download(&bufs[b.id], b.len),
            _ => unreachable!(),
        }
    }

    /// Set the value of an input or parameter.
    pub fn set(&mut self, v: Var, data: &[f32]) -> Result<()> {
        let b = self.layout.value(v);
        if b.len != data.len() {
            let info = self.graph.info(v);
            let what = format!("{} {:?}", info.name, info.shape);
            return Err(Error::Length { what, expected: b.len, got: data.len() });
        }
        self.write(b, data)
    }

    pub fn get(&self, v: Var) -> Result<Vec<f32>> {
        self.read(self.layout.value(v))
    }

    /// dL/dv after a backward pass; `None` when `v` needs no gradient.
    pub fn get_grad(&self, v: Var) -> Result<Option<Vec<f32>>> {
        self.layout.grad(v).map(|b| self.read(b)).transpose()
    }

    /// Run program `name`: call `f` now (CPU), or record it on first use and replay (GPU).
    /// A program whose recording failed is not kept: the error is returned each time.
    pub fn run(&mut self, name: &'static str, f: impl FnOnce(&mut Ctx, &Graph, &Layout)) -> Result<()> {
        match (&mut self.store, &self.device) {
            (Store::Cpu(s), _) => f(&mut Ctx::Cpu(s), &self.graph, &self.layout),
            (Store::Gpu { bufs, programs }, Device::Gpu(g)) => {
                if !programs.contains_key(name) {
                    let (mut cmds, mut error) = (Vec::new(), None);
                    let mut cx = Ctx::Gpu(Recorder { gpu: g, bufs, cmds: &mut cmds, error: &mut error });
                    f(&mut cx, &self.graph, &self.layout);
                    if let Some(e) = error {
                        return Err(e);
                    }
                    programs.insert(name, cmds);
                }
                g.submit(bufs, &programs[name]);
            }
            _ => unreachable!(),
        }
        Ok(())
    }

    /// Number of GPU dispatches in a recorded program (0 on the CPU).
    pub fn dispatch_count(&self, name: &str) -> usize {
        match &self.store {
            Store::Gpu { programs, .. } => {
                programs.get(name).map_or(0, |c| c.iter().filter(|c| matches!(c, Cmd::Dispatch { .. })).count())
            }
            Store::Cpu(_) => 0,
        }
    }

    /// The buffers and recorded commands of program `name` (GPU, after its first run), for
    /// tools that encode it themselves: `bench kernels` times it with timestamp queries.
    pub fn recorded(&self, name: &str) -> Option<(&[wgpu::Buffer], &[Cmd])> {
        match &self.store {
            Store::Gpu { bufs, programs } => programs.get(name).map(|c| (bufs.as_slice(), c.as_slice())),
            Store::Cpu(_) => None,
        }
    }

    pub fn forward(&mut self) -> Result<()> {
        self.run("forward", forward)
    }

    /// Forward then backward of the scalar `loss` (dL/dL = 1).
    pub fn forward_backward(&mut self, loss: Var) -> Result<()> {
        self.train_step("forward_backward", loss, |_, _| {})
    }

    /// One training step as one program: forward, backward of the scalar `loss`
    /// (dL/dL = 1), then `update` (the optimizer) on the fresh gradients.
    pub fn train_step(&mut self, name: &'static str, loss: Var, update: impl FnOnce(&mut Ctx, &Layout)) -> Result<()> {
        if self.graph.len(loss) != 1 || self.layout.grad(loss).is_none() {
            return Err(Error::Shape(format!("loss must be a scalar that depends on a parameter, got {:?}", self.graph.shape(loss))));
        }
        self.set_seed(loss, &[1.0])?;
        self.run(name, |cx, g, l| {
            forward(cx, g, l);
            backward(cx, g, l, loss);
            update(cx, l);
        })
    }

    /// Set the seed of the next backward from `out` to `upstream`. The programs that run
    /// it ([`Executor::backward_with`], [`Executor::train_step`]) copy the seed into dL/d out.
    fn set_seed(&mut self, out: Var, upstream: &[f32]) -> Result<()> {
        if upstream.len() != self.graph.len(out) {
            return Err(Error::Length { what: "upstream gradient".into(), expected: self.graph.len(out), got: upstream.len() });
        }
        let mut seed = vec![0.0; self.layout.seed.len];
        seed[..upstream.len()].copy_from_slice(upstream);
        self.write(self.layout.seed, &seed)
    }

    /// Backward from `out` with the given upstream gradient (op tests), after a forward.
    pub fn backward_with(&mut self, out: Var, upstream: &[f32]) -> Result<()> {
        self.set_seed(out, upstream)?;
        if self.layout.grad(out).is_none() {
            return Err(Error::Shape(format!("backward from {}, which needs no gradient", self.graph.info(out).name)));
        }
        self.run("backward_with", |cx, g, l| backward(cx, g, l, out))
    }
}

/// Per-op wall time on the CPU backend (`bench step --profile`): op name -> (forward s,
/// backward s, calls). Off unless [`profile_start`] was called; the GPU records, so it
/// has nothing to time per op here (its kernels are timed by `bench kernels`).
static PROFILE: std::sync::Mutex<Option<HashMap<&'static str, (f64, f64, usize)>>> = std::sync::Mutex::new(None);

pub fn profile_start() {
    *PROFILE.lock().unwrap() = Some(HashMap::new());
}

/// The profile so far, slowest op first, and reset it.
pub fn profile_take() -> Vec<(&'static str, f64, f64, usize)> {
    let mut v: Vec<_> = PROFILE.lock().unwrap().replace(HashMap::new()).unwrap_or_default()
        .into_iter().map(|(k, (f, b, n))| (k, f, b, n)).collect();
    v.sort_by(|a, b| (b.1 + b.2).total_cmp(&(a.1 + a.2)));
    v
}

/// Run `f`, adding its time to op `name` when profiling a CPU run.
fn timed(cx: &mut Ctx, name: &'static str, backward: bool, f: impl FnOnce(&mut Ctx)) {
    if !matches!(cx, Ctx::Cpu(_)) || PROFILE.lock().unwrap().is_none() {
        return f(cx);
    }
    let t = std::time::Instant::now();
    f(cx);
    let dt = t.elapsed().as_secs_f64();
    if let Some(p) = PROFILE.lock().unwrap().as_mut() {
        let e = p.entry(name).or_default();
        if backward { e.1 += dt } else { e.0 += dt; e.2 += 1 }
    }
}

/// Every node's forward, in recording order.
pub fn forward(cx: &mut Ctx, g: &Graph, l: &Layout) {
    for (i, n) in g.nodes().iter().enumerate() {
        let x: Vec<Buf> = n.inputs().iter().map(|&v| l.value(v)).collect();
        let op = n.op();
        timed(cx, op.name(), false, |cx| op.forward(cx, &x, l.value(n.output()), l.saved(i)));
    }
}

/// Zero every gradient, seed d out, then run the nodes backward in reverse order.
pub fn backward(cx: &mut Ctx, g: &Graph, l: &Layout, out: Var) {
    for b in l.grad.iter().flatten() {
        clear(cx, *b);
    }
    // the executor checked that `out` needs a gradient before running this program
    let Some(gout) = l.grad(out) else { return };
    copy(cx, Buf { id: l.seed.id, len: gout.len }, gout);
    for (i, n) in g.nodes().iter().enumerate().rev() {
        let Some(gy) = l.grad(n.output()) else { continue };
        let x: Vec<Buf> = n.inputs().iter().map(|&v| l.value(v)).collect();
        let gx: Vec<Option<Buf>> = n.inputs().iter().map(|&v| l.grad(v)).collect();
        let op = n.op();
        timed(cx, op.name(), true, |cx| op.backward(cx, &x, l.value(n.output()), l.saved(i), gy, &gx));
    }
}

pub fn clear(cx: &mut Ctx, b: Buf) {
    match cx {
        Ctx::Cpu(s) => s.get_mut(b).fill(0.0),
        Ctx::Gpu(r) => r.clear(b),
    }
}

pub fn copy(cx: &mut Ctx, src: Buf, dst: Buf) {
    match cx {
        Ctx::Cpu(s) => {
            let v = s.get(src)[..dst.len].to_vec();
            s.get_mut(dst).copy_from_slice(&v);
        }
        Ctx::Gpu(r) => r.copy(src, dst),
    }
}
