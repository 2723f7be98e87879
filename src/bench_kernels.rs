//! Kernel microbenchmarks (filled in by the benchmark work).
use anyhow::Result;
use crate::backend::DeviceKind;
pub fn run(_device: DeviceKind) -> Result<()> {
    anyhow::bail!("bench kernels: not built yet")
}
