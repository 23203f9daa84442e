//! Calibrates this machine without building the compiler (what `atomc targets --calibrate`
//! does): prints the f32 FMA GFLOP/s per vector width and the triad bandwidth, and stores
//! them where `Target::host` reads them. `cargo run --release -p targets --example calibrate`.

fn main() -> Result<(), targets::CalibrationError> {
    let c = targets::calibrate();
    for w in &c.fma {
        println!("f32 FMA, {:>3}-bit vectors, 1 core: {:>8.2} GFLOP/s", w.bits, w.gflops);
    }
    println!("triad bandwidth, {} threads:      {:>8.2} GB/s", c.bandwidth_threads, c.bandwidth_gbs);
    println!("({})", c.method);
    println!("stored {}", targets::store_calibration(&c, None)?.display());
    println!("{}", targets::Target::host().summary());
    Ok(())
}
