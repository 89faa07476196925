//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Vigil watches camera feeds, detects people, vehicles and other objects,
/// stores what it sees, and serves a web UI and REST API.
///
/// Quick start: `vigil demo`, then open http://127.0.0.1:8080 in a browser.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, propagate_version = true)]
pub struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the appliance with a configuration file (what the service does).
    Run {
        /// TOML configuration, e.g. /etc/vigil/vigil.toml.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run on built-in demo cameras with the default model; no configuration needed.
    Demo(DemoArgs),
    /// Validate a configuration file and exit (0 = valid, 2 = invalid).
    CheckConfig {
        #[arg(value_name = "FILE")]
        config: PathBuf,
    },
    /// Detect objects in image files and print what was found.
    Detect(DetectArgs),
    /// Convert a TF.js graph model (model.json + shards) into a Vigil model file.
    ImportTfjs(ImportArgs),
    /// Install and list models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Manage the people who log in to the UI.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens for central servers and scripts.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Follow the events of many boxes into one JSON-lines file, resuming
    /// from saved cursors (the reference central poller).
    Poll(PollArgs),
    /// Measure the whole pipeline with N simulated cameras, or find how many
    /// real-time cameras this box holds (--max-cameras).
    Bench(BenchArgs),
    /// Print the REST API's OpenAPI 3 document (JSON).
    Openapi,
    /// Print version and build information.
    Version,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Simulated cameras.
    #[arg(long, default_value_t = 4)]
    pub cameras: usize,
    /// What the cameras play.
    #[arg(long, value_enum, default_value = "1080p")]
    pub clip: crate::bench::ClipChoice,
    /// Frames per second each camera sends the model.
    #[arg(long, default_value_t = 5.0)]
    pub detect_fps: f64,
    /// Read the clips as fast as the pipeline takes them instead of at real
    /// time (throughput: decoding waits for the model rather than dropping).
    #[arg(long, conflicts_with = "max_cameras")]
    pub fast: bool,
    /// Find the most real-time cameras held with no drops (1, 2, 4, ... then
    /// halving the gap), instead of running --cameras once.
    #[arg(long)]
    pub max_cameras: bool,
    /// Upper bound for --max-cameras.
    #[arg(long, default_value_t = 64)]
    pub limit: usize,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Seconds between samples of memory and queue depth (the report's timeline).
    #[arg(long, default_value_t = 10)]
    pub sample_every: u64,
    /// Seconds run before measuring (model warm-up, queues filling).
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Model name, or a .safetensors or darknet .cfg path.
    #[arg(long, default_value = vigil_inference::DEFAULT_MODEL)]
    pub model: String,
    /// f32, f16 or int8.
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    pub precision: vigil_inference::Precision,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Decoding: auto, cuda, vaapi or none.
    #[arg(long, default_value = "auto", value_parser = parse_hwaccel)]
    pub hwaccel: vigil_ingest::HwAccel,
    /// Most frames per model call.
    #[arg(long, default_value_t = 4)]
    pub max_batch: usize,
    /// With the model on a GPU: copy NVDEC frames through the host instead
    /// of handing them over in GPU memory (to measure what that saves).
    #[arg(long)]
    pub host_frames: bool,
    /// Skip the anchors (the model alone, decoding alone, the ffmpeg CLI).
    #[arg(long)]
    pub no_anchors: bool,
    /// Also write the report as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an SVG chart of cameras held against CPU use.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Where clips and the runs' databases go [default: a vigil-bench folder in the temp dir].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PollArgs {
    /// A box's base URL, e.g. https://gate-box:8443 (repeat for more boxes).
    #[arg(long, value_name = "URL", required = true)]
    pub from: Vec<String>,
    /// API token (read scope is enough): one for all boxes, or one per --from, in order.
    #[arg(long, required = true)]
    pub token: Vec<String>,
    /// Output: one JSON object per line (`event`, or `gap`), appended.
    #[arg(long, value_name = "FILE", default_value = "events.jsonl")]
    pub out: PathBuf,
    /// Where the cursors are kept between runs.
    #[arg(long, value_name = "DIR", default_value = "poll-state")]
    pub state: PathBuf,
    /// Seconds between rounds once caught up.
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    /// Drain every box once and exit.
    #[arg(long)]
    pub once: bool,
    /// Trust this CA or self-signed certificate (PEM) for HTTPS boxes.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// Where the database is: the service's configuration file, or a storage
/// directory (e.g. the demo's).
#[derive(Debug, Args)]
pub struct ConfigArg {
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = "/etc/vigil/vigil.toml"
    )]
    pub config: PathBuf,
    /// The storage directory itself, instead of reading it from --config.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    pub data: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user or set a new password (asked for, or read from stdin).
    Add {
        name: String,
        /// read (view only) or admin (may change settings, users and tokens).
        #[arg(long, default_value = "admin")]
        scope: String,
        /// Read the password from the first line of stdin instead of asking.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List users.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Delete a user and end their sessions.
    Delete {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (once: only its hash is kept).
    Create {
        /// What it is for, e.g. the central server's name.
        name: String,
        /// read (poll the API) or admin (also change things).
        #[arg(long, default_value = "read")]
        scope: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List tokens (ids, names, scopes, last use).
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Revoke a token by id; a running service refuses it within a second.
    Revoke {
        id: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address for the UI and API.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    pub listen: String,
    /// Where the demo keeps its database and clips [default: a vigil-demo folder in the temp dir].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Model name, or a .safetensors or darknet .cfg path.
    #[arg(long, default_value = vigil_inference::DEFAULT_MODEL)]
    pub model: String,
}

#[derive(Debug, Args)]
pub struct DetectArgs {
    /// JPEG or PNG files.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Model name, or a .safetensors or darknet .cfg path.
    #[arg(long, default_value = vigil_inference::DEFAULT_MODEL)]
    pub model: String,
    /// Report detections scoring at least this (0-1).
    #[arg(long, default_value_t = 0.5)]
    pub min_score: f32,
    /// f32, f16 or int8 (int8: x86-64 CPUs with AVX2; fastest with AVX-512 VNNI).
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    pub precision: vigil_inference::Precision,
    /// Print one JSON array instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The model.json of a TF.js graph model.
    #[arg(value_name = "MODEL_JSON")]
    pub model_json: PathBuf,
    /// Output file.
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = "models/ssdlite_mobilenet_v2_coco.safetensors"
    )]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Install a model into a model directory so configs can name it:
    /// an Ultralytics YOLOv8/YOLO11 checkpoint (.pt), a darknet .cfg (with
    /// its .weights beside it) or a TF.js SSD graph (model.json).
    Import(ModelImportArgs),
    /// List the models found on the search path.
    List,
}

#[derive(Debug, Args)]
pub struct ModelImportArgs {
    /// best.pt, yolov3-tiny.cfg or model.json.
    #[arg(value_name = "FILE")]
    pub source: PathBuf,
    /// Name to install it under [default: the file's stem].
    #[arg(long)]
    pub name: Option<String>,
    /// Class names, one per line (darknet; an Ultralytics checkpoint carries its own).
    #[arg(long, value_name = "FILE")]
    pub names: Option<PathBuf>,
    /// Model directory to install into [default: /var/lib/vigil/models
    /// on an installed box, where the service looks; else ./models].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

fn parse_hwaccel(s: &str) -> Result<vigil_ingest::HwAccel, String> {
    use vigil_ingest::HwAccel;
    match s {
        "auto" => Ok(HwAccel::Auto),
        "cuda" => Ok(HwAccel::Cuda),
        "vaapi" => Ok(HwAccel::Vaapi),
        "none" => Ok(HwAccel::None),
        other => Err(format!("{other:?}: use auto, cuda, vaapi or none")),
    }
}

fn parse_precision(s: &str) -> Result<vigil_inference::Precision, String> {
    match s {
        "f32" => Ok(vigil_inference::Precision::F32),
        "f16" => Ok(vigil_inference::Precision::F16),
        "int8" => Ok(vigil_inference::Precision::Int8),
        "bf16" => Err("bf16 runs only on a GPU; use f32, f16 or int8".into()),
        other => Err(format!("{other:?}: use f32, f16 or int8")),
    }
}
