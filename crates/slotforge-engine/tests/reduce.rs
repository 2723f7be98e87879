use slotforge_engine::testing::*;

#[test]
fn sum_mean_mse_awkward_sizes() {
    for n in [1usize, 7, 255, 257, 1000] {
        check_op(&format!("sum n={n}"), |g| { let x = g.input_with_grad("x", &[n]); g.sum(x) }, Check::default());
        check_op(&format!("mean n={n}"), |g| { let x = g.input_with_grad("x", &[n, 1]); g.mean(x) }, Check::default());
        check_op(&format!("mse n={n}"), |g| {
            let a = g.input_with_grad("a", &[n]);
            let b = g.input_with_grad("b", &[n]);
            g.mse(a, b)
        }, Check::default());
    }
}

#[test]
fn mse_only_one_side_needs_grad() {
    // the target of a reconstruction loss is a frozen input: no gradient buffer for it
    check_op("mse frozen target", |g| {
        let a = g.input_with_grad("a", &[33, 5]);
        let b = g.input("b", &[33, 5]);
        g.mse(a, b)
    }, Check::default());
}
