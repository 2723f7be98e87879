//! Failures come back as typed errors, not panics: a shader the device rejects, buffers
//! that do not fit an entry point, data of the wrong length, a shape that does not fit.

use slotforge_engine::testing::gpu;
use slotforge_engine::{Buf, Ctx, Device, Error, Executor, Graph, Op, Shader};

/// An op whose GPU forward dispatches `shader` with the output bound at binding 1.
#[derive(Debug)]
struct Dispatch(Shader);

impl Op for Dispatch {
    fn name(&self) -> &'static str {
        "dispatch"
    }
    fn forward(&self, cx: &mut Ctx, _: &[Buf], y: Buf, _: Buf) {
        if let Ctx::Gpu(r) = cx {
            r.dispatch(self.0, "main", &[y.len as u32, 0, 0, 0], &[y], [1, 1, 1]);
        }
    }
    fn backward(&self, _: &mut Ctx, _: &[Buf], _: Buf, _: Buf, _: Buf, _: &[Option<Buf>]) {}
}

fn run_on_gpu(shader: Shader) -> Result<(), Error> {
    let mut g = Graph::new();
    let x = g.input("x", &[4]);
    g.push(Dispatch(shader), &[x], &[4]);
    let mut ex = Executor::new(g, gpu())?;
    ex.forward()
}

#[test]
fn a_shader_the_device_rejects_is_an_error() {
    let bad = Shader::new("bad", "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }");
    let err = run_on_gpu(bad).unwrap_err();
    assert!(matches!(err, Error::Shader { shader: "bad", entry: "main", .. }), "{err}");
}

#[test]
fn buffers_that_do_not_fit_the_bindings_are_an_error() {
    // binding 1 is a uniform here, the recorder binds a storage buffer
    let src = "struct P { n: u32, a: u32, b: u32, c: u32 }
        @group(0) @binding(0) var<uniform> p: P;
        @group(0) @binding(1) var<uniform> y: vec4<f32>;
        @compute @workgroup_size(1) fn main() { let v = y.x + f32(p.n); }";
    let err = run_on_gpu(Shader::new("mismatch", src)).unwrap_err();
    assert!(matches!(err, Error::BindGroup { shader: "mismatch", .. }), "{err}");
}

#[test]
fn data_of_the_wrong_length_is_an_error() {
    let mut g = Graph::new();
    let x = g.input("x", &[2, 3]);
    let mut ex = Executor::new(g, Device::Cpu).unwrap();
    let err = ex.set(x, &[1.0; 5]).unwrap_err();
    assert!(matches!(err, Error::Length { expected: 6, got: 5, .. }), "{err}");
}

#[test]
fn a_shape_that_does_not_fit_is_an_error_from_the_first_op_that_has_it() {
    let mut g = Graph::new();
    let a = g.input("a", &[2, 3]);
    let b = g.input("b", &[4, 5]);
    let y = g.matmul(a, b, false, false);
    g.relu(y); // building goes on past the error
    let err = Executor::new(g, Device::Cpu).err().expect("a shape error");
    assert!(matches!(err, Error::Shape(ref m) if m.starts_with("matmul: inner dims differ")), "{err}");
}
