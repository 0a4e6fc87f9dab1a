//! `weir-bench`: the benchmark, also run as `weir bench` (see the
//! `weir-bench` crate).

fn main() -> std::process::ExitCode {
    weir_bench::main()
}
