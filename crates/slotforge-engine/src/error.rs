//! The engine's one error type.

/// Everything the engine can fail with. Device failures carry the driver's message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Shapes that do not fit an op, found while building the graph (the first one).
    #[error("{0}")]
    Shape(String),
    /// Data of the wrong length for a buffer or variable.
    #[error("{what}: expected {expected} floats, got {got}")]
    Length { what: String, expected: usize, got: usize },
    /// A device name that is not one of `auto|cpu|vulkan|metal|dx12|gl`.
    #[error("unknown device {0:?}: expected auto, cpu, vulkan, metal, dx12 or gl")]
    UnknownDevice(String),
    /// No adapter of the requested kind.
    #[error("no {0} adapter found. On Linux without a GPU install Mesa lavapipe: apt-get install -y mesa-vulkan-drivers")]
    NoAdapter(String),
    #[error("opening device on adapter {adapter}: {source}")]
    RequestDevice { adapter: String, source: wgpu::RequestDeviceError },
    /// A WGSL module or pipeline that the device rejected.
    #[error("shader {shader}.wgsl, entry {entry}: {message}")]
    Shader { shader: &'static str, entry: &'static str, message: String },
    /// Buffers that do not fit an entry point's bindings.
    #[error("bind group for {shader}.wgsl entry {entry}: {message}")]
    BindGroup { shader: &'static str, entry: &'static str, message: String },
    /// Waiting for the device or mapping a buffer back failed.
    #[error("GPU readback: {0}")]
    Readback(String),
    /// A size that does not fit the kernels' 32-bit indexing.
    #[error("{0}: size exceeds 32-bit GPU indexing")]
    TooLarge(&'static str),
    /// An argument out of its range (optimizer settings, a parameter listed twice).
    #[error("{0}")]
    Invalid(String),
    /// Saved optimizer state that does not match the optimizer.
    #[error("{0}")]
    State(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
