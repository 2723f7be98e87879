//! Typed kernel parameters. Every kernel reads its parameters from a uniform struct at
//! binding 0; the Rust side is a `#[repr(C)]` struct of the same name, fields and order,
//! declared with [`kernel_params!`](crate::kernel_params). Each declaration lists its
//! layout, and a test compares it field by field with the struct naga reflects from the
//! WGSL, so the two cannot drift.

/// One field of a parameter struct as Rust lays it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
    /// `u32`, `f32` or `[[u32; 4]; 2]` (WGSL `array<vec4<u32>, 2>`).
    pub ty: &'static str,
}

/// A kernel parameter block: the WGSL struct `NAME` in `shaders/<SHADER>.wgsl`.
pub trait KernelParams: bytemuck::Pod {
    const SHADER: &'static str;
    const NAME: &'static str;
    fn fields() -> Vec<Field>;
}

/// The layout of a [`KernelParams`] type, for the test that checks it against the WGSL.
#[derive(Clone, Debug)]
pub struct ParamsLayout {
    pub shader: &'static str,
    pub name: &'static str,
    pub size: usize,
    pub fields: Vec<Field>,
}

impl ParamsLayout {
    pub fn of<P: KernelParams>() -> ParamsLayout {
        ParamsLayout { shader: P::SHADER, name: P::NAME, size: std::mem::size_of::<P>(), fields: P::fields() }
    }
}

/// Declare a kernel parameter struct that mirrors the WGSL struct of the same name in
/// `shaders/<shader>.wgsl`:
///
/// ```
/// slotforge_engine::kernel_params! {
///     /// y = scale * sum(x)
///     pub struct ExampleParams in "example" { n: u32, scale: f32 }
/// }
/// let p = ExampleParams { n: 4, scale: 0.25 };
/// assert_eq!(bytemuck::bytes_of(&p).len(), 8);
/// ```
#[macro_export]
macro_rules! kernel_params {
    ($(#[$m:meta])* $vis:vis struct $name:ident in $shader:literal { $($(#[$fm:meta])* $field:ident: $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, $crate::bytemuck::Pod, $crate::bytemuck::Zeroable)]
        #[bytemuck(crate = "slotforge_engine::bytemuck")]
        $vis struct $name { $($(#[$fm])* pub $field: $ty),* }

        impl $crate::params::KernelParams for $name {
            const SHADER: &'static str = $shader;
            const NAME: &'static str = stringify!($name);
            fn fields() -> Vec<$crate::params::Field> {
                vec![$($crate::params::Field {
                    name: stringify!($field),
                    offset: std::mem::offset_of!($name, $field),
                    size: std::mem::size_of::<$ty>(),
                    ty: stringify!($ty),
                }),*]
            }
        }
    };
}
