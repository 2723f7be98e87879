//! A two-layer MLP fitting y = sin(x) with Adam, on the CPU and on wgpu, with nothing but
//! the engine: `cargo run -p slotforge-engine --example mlp`.

use rand::{Rng, SeedableRng};
use slotforge_engine::backend::{open_any_gpu, Device};
use slotforge_engine::ops::optim::{Adam, AdamConfig};
use slotforge_engine::{Executor, Graph, Result};

fn train(device: Device) -> Result<f32> {
    let (n, hidden) = (256, 32);
    let mut g = Graph::new();
    let x = g.input("x", &[n, 1]);
    let target = g.input("y", &[n, 1]);
    let (w1, b1) = (g.param("w1", &[hidden, 1]), g.param("b1", &[hidden]));
    let (w2, b2) = (g.param("w2", &[1, hidden]), g.param("b2", &[1]));
    let h = g.linear(x, w1, Some(b1), true); // relu(x w1^T + b1)
    let y = g.linear(h, w2, Some(b2), false);
    let loss = g.mse(y, target);

    let mut ex = Executor::new(g, device)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for p in [w1, b1, w2, b2] {
        let v: Vec<f32> = (0..ex.graph().len(p)).map(|_| rng.random_range(-1.0..1.0)).collect();
        ex.set(p, &v)?;
    }
    let xs: Vec<f32> = (0..n).map(|i| -3.0 + 6.0 * i as f32 / n as f32).collect();
    ex.set(x, &xs)?;
    ex.set(target, &xs.iter().map(|v| v.sin()).collect::<Vec<_>>())?;

    let adam = Adam::new(&mut ex, &[w1, b1, w2, b2], AdamConfig { lr: 1e-2, ..Default::default() })?;
    for step in 1..=500 {
        adam.set_step(&mut ex, step, 1e-2)?;
        ex.train_step("step", loss, |cx, l| adam.record(cx, l))?;
    }
    Ok(ex.get(loss)?[0])
}

fn main() -> Result<()> {
    println!("cpu:  final mse {:.5}", train(Device::Cpu)?);
    let gpu = open_any_gpu()?;
    let name = format!("{} ({:?})", gpu.info().name, gpu.info().backend);
    println!("wgpu: final mse {:.5} on {name}", train(Device::Gpu(std::sync::Arc::new(gpu)))?);
    Ok(())
}
