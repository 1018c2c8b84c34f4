//! otelrust: the opentelemetry-rust row of libpdtrace's benchmark
//! (tests/bench/run_bench.sh). The same traced P/D request as the other rows
//! (request, prefill and decode spans with the same attributes and types, the
//! breakdown computed from six clock reads, W3C trace context extracted from
//! the inbound traceparent and injected for both legs), exported by the OTLP
//! HTTP/protobuf exporter (blocking reqwest client) through a
//! BatchSpanProcessor. Command line and JSON result line as the Go rows'.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span, SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Compression, Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;

/// Counts heap allocations in the whole process (all threads).
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const INBOUND: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const P: &str = "llm_d.pd_proxy.";

struct Config {
    endpoint: String,
    compression: String,
    n: usize,
    warm: usize,
    flush_every: usize,
    batch: usize,
    queue: usize,
    delay_ms: u64,
    rate: u64,
    seconds: f64,
}

fn usage(msg: &str) -> ! {
    eprintln!("otelrust: {msg}");
    eprintln!(
        "usage: otelrust -endpoint URL [-compression none|gzip|zstd] [-n N] [-warm N] \
         [-flush-every N] [-batch N] [-queue N] [-delay-ms N] [-rate R -seconds S]"
    );
    std::process::exit(2)
}

fn parse() -> Config {
    let mut c = Config {
        endpoint: String::new(),
        compression: "gzip".into(),
        n: 20000,
        warm: 5000,
        flush_every: 8192,
        batch: 1536,
        queue: 65536,
        delay_ms: 200,
        rate: 0,
        seconds: 5.0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let k = args[i].trim_start_matches('-').to_string();
        let v = match args.get(i + 1) {
            Some(v) => v.clone(),
            None => usage(&format!("{} needs a value", args[i])),
        };
        fn num<T: std::str::FromStr>(k: &str, v: &str) -> T {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("bad value for -{k}: {v}")))
        }
        match k.as_str() {
            "endpoint" => c.endpoint = v,
            "compression" => c.compression = v,
            "n" => c.n = num(&k, &v),
            "warm" => c.warm = num(&k, &v),
            "flush-every" => c.flush_every = num(&k, &v),
            "batch" => c.batch = num(&k, &v),
            "queue" => c.queue = num(&k, &v),
            "delay-ms" => c.delay_ms = num(&k, &v),
            "rate" => c.rate = num(&k, &v),
            "seconds" => c.seconds = num(&k, &v),
            _ => usage(&format!("unknown flag {}", args[i])),
        }
        i += 2;
    }
    if c.endpoint.is_empty() || c.n == 0 || c.flush_every == 0 {
        usage("need -endpoint, -n > 0 and -flush-every > 0");
    }
    c
}

fn cpu_ns() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn maxrss_kb() -> i64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss as i64
}

fn ms(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a)
        .map(|d| d.as_nanos() as f64 / 1e6)
        .unwrap_or(0.0)
}

/// A random UUID-formatted request id, as libpdtrace generates.
fn request_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = |s: &[u8]| s.iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        h(&b[0..4]),
        h(&b[4..6]),
        h(&b[6..8]),
        h(&b[8..10]),
        h(&b[10..])
    )
}

fn main() {
    let c = parse();
    let mut eb = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(c.endpoint.clone());
    match c.compression.as_str() {
        "none" => {}
        "gzip" => eb = eb.with_compression(Compression::Gzip),
        "zstd" => eb = eb.with_compression(Compression::Zstd),
        other => usage(&format!("unknown compression {other}")),
    }
    let exporter = eb.build().unwrap_or_else(|e| {
        eprintln!("otelrust: exporter: {e}");
        std::process::exit(1)
    });
    let bsp = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(c.queue)
                .with_max_export_batch_size(c.batch)
                .with_scheduled_delay(Duration::from_millis(c.delay_ms))
                .build(),
        )
        .build();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let res = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "llm-d-pd-proxy"),
            KeyValue::new("telemetry.sdk.name", "opentelemetry"),
            KeyValue::new("telemetry.sdk.language", "rust"),
            KeyValue::new("telemetry.sdk.version", "0.33.1"),
            KeyValue::new("process.pid", std::process::id() as i64),
            KeyValue::new("host.name", host),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_resource(res)
        .with_span_processor(bsp)
        .build();
    let tracer = provider.tracer_with_scope(
        InstrumentationScope::builder("libpdtrace-bench")
            .with_version("0.1.0")
            .build(),
    );
    let prop = TraceContextPropagator::new();

    let one = || {
        let a = SystemTime::now();
        let mut inb = HashMap::new();
        inb.insert("traceparent".to_string(), INBOUND.to_string());
        let pctx = prop.extract(&inb);
        let mut req = tracer
            .span_builder("llm_d.pd_proxy.request")
            .with_kind(SpanKind::Server)
            .with_start_time(a)
            .start_with_context(&tracer, &pctx);
        let id = request_id();
        req.set_attributes([
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("url.path", "/v1/chat/completions"),
            KeyValue::new("gen_ai.request.model", "llama-3.1-8b"),
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.request.max_tokens", 128i64),
            KeyValue::new("gen_ai.request.stream", true),
        ]);
        let rctx = pctx.with_span(req);

        let ps = SystemTime::now();
        let pre = tracer
            .span_builder("llm_d.pd_proxy.prefill")
            .with_kind(SpanKind::Client)
            .with_start_time(ps)
            .start_with_context(&tracer, &rctx);
        let pctx2 = rctx.with_span(pre);
        let mut hp = HashMap::new();
        prop.inject_context(&pctx2, &mut hp);
        hp.insert("x-request-id".to_string(), id.clone());
        let pe = SystemTime::now();
        let pspan = pctx2.span();
        pspan.set_attributes([
            KeyValue::new("server.address", "10.0.0.1"),
            KeyValue::new("server.port", 8000i64),
            KeyValue::new("http.response.status_code", 200i64),
        ]);
        pspan.end_with_timestamp(pe);
        let rs = rctx.span();
        rs.set_attributes([
            KeyValue::new(format!("{P}prefill_target"), "10.0.0.1:8000"),
            KeyValue::new(format!("{P}prefill.status_code"), 200i64),
        ]);

        let ds = SystemTime::now();
        let dec = tracer
            .span_builder("llm_d.pd_proxy.decode")
            .with_kind(SpanKind::Client)
            .with_start_time(ds)
            .start_with_context(&tracer, &rctx);
        let dctx = rctx.with_span(dec);
        let mut hd = HashMap::new();
        prop.inject_context(&dctx, &mut hd);
        hd.insert("x-request-id".to_string(), id.clone());
        let f = SystemTime::now();
        let l = SystemTime::now();
        let dspan = dctx.span();
        dspan.set_attributes([
            KeyValue::new("server.address", "10.0.0.2"),
            KeyValue::new("server.port", 8000i64),
            KeyValue::new("http.response.status_code", 200i64),
        ]);
        rs.set_attributes([
            KeyValue::new(format!("{P}decode_target"), "10.0.0.2:8000"),
            KeyValue::new(format!("{P}decode.status_code"), 200i64),
            KeyValue::new("http.response.status_code", 200i64),
        ]);
        let (inp, out, cached) = (1024i64, 128i64, 512i64);
        let e = SystemTime::now();
        let bd = [
            KeyValue::new(format!("{P}queue_ms"), ms(a, ps)),
            KeyValue::new(format!("{P}prefill_duration_ms"), ms(ps, pe)),
            KeyValue::new(format!("{P}kv_transfer_overhead_ms"), ms(pe, ds)),
            KeyValue::new(format!("{P}decode_ttft_ms"), ms(ds, f)),
            KeyValue::new(format!("{P}true_ttft_ms"), ms(a, f)),
            KeyValue::new(format!("{P}decode_duration_ms"), ms(ds, e)),
            KeyValue::new(format!("{P}total_duration_ms"), ms(a, e)),
            KeyValue::new(format!("{P}tpot_ms"), ms(f, l) / (out - 1) as f64),
            KeyValue::new(format!("{P}request_id"), id),
        ];
        rs.set_attributes(bd.clone());
        rs.set_attributes([
            KeyValue::new(format!("{P}connector"), "nixlv2"),
            KeyValue::new(format!("{P}disaggregation_enabled"), true),
            KeyValue::new(format!("{P}concurrent_pd"), false),
            KeyValue::new("gen_ai.usage.input_tokens", inp),
            KeyValue::new("gen_ai.usage.output_tokens", out),
            KeyValue::new("gen_ai.usage.cache_read.input_tokens", cached),
        ]);
        dspan.set_attributes(bd);
        dspan.set_attribute(KeyValue::new("gen_ai.usage.output_tokens", out));
        dspan.end_with_timestamp(e);
        rs.end_with_timestamp(e);
    };
    let flush = || {
        if let Err(e) = provider.force_flush() {
            eprintln!("otelrust: flush: {e}");
        }
    };

    if c.rate > 0 {
        let t0 = Instant::now();
        let cpu0 = cpu_ns();
        let dur = Duration::from_secs_f64(c.seconds);
        let (mut sent, mut late) = (0u64, 0u64);
        loop {
            let el = t0.elapsed();
            if el >= dur {
                break;
            }
            let due = (el.as_secs_f64() * c.rate as f64) as u64;
            if due > sent + c.rate / 100 {
                late += 1;
            }
            while sent < due {
                one();
                sent += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let wall = t0.elapsed().as_secs_f64();
        flush();
        println!(
            "{{\"impl\":\"otel-rust\",\"mode\":\"rate\",\"rate\":{},\"seconds\":{:.3},\
             \"busy_s\":{:.3},\"requests\":{},\"achieved_rps\":{:.0},\"late_ticks\":{},\
             \"cpu_ns_per_req\":{:.1},\"maxrss_kb\":{}}}",
            c.rate,
            wall,
            t0.elapsed().as_secs_f64(),
            sent,
            sent as f64 / wall,
            late,
            (cpu_ns() - cpu0) as f64 / sent.max(1) as f64,
            maxrss_kb()
        );
    } else {
        for i in 0..c.warm {
            one();
            if (i + 1) % c.flush_every == 0 {
                flush();
            }
        }
        flush();
        let mut lat = vec![0u64; c.n];
        let a0 = ALLOCS.load(Ordering::Relaxed);
        let cpu0 = cpu_ns();
        let w0 = Instant::now();
        for (i, slot) in lat.iter_mut().enumerate() {
            let s = Instant::now();
            one();
            *slot = s.elapsed().as_nanos() as u64;
            if (i + 1) % c.flush_every == 0 {
                flush();
            }
        }
        flush();
        let wall = w0.elapsed().as_secs_f64();
        let cpu1 = cpu_ns();
        let a1 = ALLOCS.load(Ordering::Relaxed);
        let sum: u64 = lat.iter().sum();
        lat.sort_unstable();
        println!(
            "{{\"impl\":\"otel-rust\",\"n\":{},\"compression\":\"{}\",\"caller_mean_ns\":{:.1},\
             \"caller_p50_ns\":{},\"caller_p99_ns\":{},\"cpu_ns_per_req\":{:.1},\"wall_s\":{:.4},\
             \"allocs_per_req\":{:.2},\"allocs_how\":\"counting global allocator, all threads \
             incl. export\",\"maxrss_kb\":{}}}",
            c.n,
            c.compression,
            sum as f64 / c.n as f64,
            lat[c.n / 2],
            lat[(c.n as f64 * 0.99) as usize],
            (cpu1 - cpu0) as f64 / c.n as f64,
            wall,
            (a1 - a0) as f64 / c.n as f64,
            maxrss_kb()
        );
    }
    if let Err(e) = provider.shutdown() {
        eprintln!("otelrust: shutdown: {e}");
    }
}
