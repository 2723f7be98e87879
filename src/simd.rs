//! Runtime CPU-feature dispatch for the hand-vectorized CPU loops (spectral linear algebra,
//! the one-output `linear`).

/// `fn name(args) -> R`, running `body(args)` compiled for AVX2 when the CPU has it (checked
/// at run time: the crate is built for baseline x86-64) and the baseline build otherwise.
/// `body` should be `#[inline(always)]` so each build gets its own copy. Only the vector
/// width changes (no FMA is enabled), so both builds give the same bits.
macro_rules! avx2_dispatch {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use avx2_dispatch;
