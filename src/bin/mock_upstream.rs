//! `mock-upstream`: the benchmark's upstream. `mock-upstream ADDR [THREADS] [CHUNKS] [GAP_MS]`
//! serves OpenAI-style JSON, or an SSE stream of CHUNKS pieces for `stream: true`,
//! one every GAP_MS milliseconds (default 0: all at once).

#[allow(clippy::print_stdout)] // the bench script waits for this line
fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9100".into());
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let chunks: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    let gap_ms: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let m = switchyard::mock::MockUpstream::start_on(
        &addr,
        threads,
        false,
        switchyard::mock::bench_script(chunks, std::time::Duration::from_millis(gap_ms)),
    );
    println!("mock-upstream listening on {}", m.addr);
    loop {
        std::thread::park();
    }
}
