//! TensorBoard event files written in pure Rust: TFRecord framing around hand-encoded `Event`
//! protobufs (scalars as `simple_value`, text as a DT_STRING tensor for the text plugin).
//!
//! Why not a crate: `tensorboard-rs` is unmaintained and pulls an old `protobuf` crate with a security
//! advisory; the handful of messages we need are a few dozen bytes of wire format. docs/tensorboard.md
//! lists the fields.
//!
//! Durability: each event is encoded in memory and handed to the OS with a single `write_all`, so a
//! killed process keeps every event added before the kill; at worst an OS crash leaves one truncated
//! record at the tail, which TensorBoard's reader skips (it stops at a short or CRC-failing record).
//! Resume: a resumed run opens a *new* event file in the same folder (files are read in name order,
//! and names start with the creation time) and writes `SessionLog { status: START }` at the step it
//! resumes from; TensorBoard then drops the killed run's events from that step on (they were computed
//! after the checkpoint and are written again), so nothing is ever rewritten in place.
use anyhow::Context;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::Result;
use crate::input_err;

/// Appends events to one `events.out.tfevents.*` file.
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

impl EventWriter {
    /// A new run: create `dir` if needed and open a new event file in it named like TensorFlow's
    /// (`events.out.tfevents.<secs>.<hostname>.<pid>.clipdoor`). The first record is the
    /// `file_version` event TensorBoard expects, then a session start at step 0.
    pub fn create(dir: &Path) -> Result<Self> {
        Self::open_new(dir, 0)
    }

    /// A run resumed from the checkpoint of `step` (the first step it will log): a new event file whose
    /// session start tells TensorBoard to discard events of step >= `step` that the interrupted run
    /// wrote before it was killed.
    pub fn resume(dir: &Path, step: i64) -> Result<Self> {
        Self::open_new(dir, step)
    }

    fn open_new(dir: &Path, start_step: i64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            input_err!("cannot create the TensorBoard folder {}: {e}. Check that the run folder is writable.", dir.display())
        })?;
        let secs = unix_time().floor() as u64;
        let stem = format!(
            "events.out.tfevents.{secs:010}.{}.{}",
            hostname(),
            std::process::id()
        );
        // Two writers in the same second and process (tests, an in-process resume) must not share a
        // file; the numbered names sort after the first, keeping TensorBoard's name order = time order.
        let mut attempt = 0u32;
        let (path, file) = loop {
            let name = match attempt {
                0 => format!("{stem}.clipdoor"),
                n => format!("{stem}.clipdoor.{n:04}"),
            };
            let path = dir.join(name);
            match File::options().append(true).create_new(true).open(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 9999 => {
                    attempt += 1
                }
                Err(e) => {
                    return Err(input_err!(
                        "cannot create event file {}: {e}. Check that the run folder is writable.",
                        path.display()
                    ))
                }
            }
        };
        let mut writer = Self { path, file };
        let mut event = event_header(unix_time(), 0);
        put_bytes(&mut event, 3, b"brain.Event:2");
        writer.write_record(&event)?;
        // Event.session_log (7) = SessionLog { status: START (1) }.
        let mut event = event_header(unix_time(), start_step);
        put_bytes(&mut event, 7, &[0x08, 0x01]);
        writer.write_record(&event)?;
        Ok(writer)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A scalar (TensorBoard's Scalars tab). Stored as a 32-bit `simple_value`, as TF does.
    pub fn add_scalar(&mut self, tag: &str, value: f64, step: i64) -> Result<()> {
        let mut summary_value = Vec::with_capacity(tag.len() + 8);
        put_bytes(&mut summary_value, 1, tag.as_bytes());
        put_key(&mut summary_value, 2, WIRE_FIXED32);
        summary_value.extend_from_slice(&(value as f32).to_le_bytes());
        self.write_summary(&summary_value, step)
    }

    /// A text (TensorBoard's Text tab renders it as Markdown), e.g. the triggered prompts of a step.
    pub fn add_text(&mut self, tag: &str, text: &str, step: i64) -> Result<()> {
        // TensorProto { dtype: DT_STRING, tensor_shape: {} (a scalar), string_val: [text] }
        let mut tensor = Vec::with_capacity(text.len() + 8);
        put_varint_field(&mut tensor, 1, DT_STRING);
        put_bytes(&mut tensor, 2, b"");
        put_bytes(&mut tensor, 8, text.as_bytes());
        // SummaryMetadata { plugin_data: { plugin_name: "text" } } (TextPluginData v0 encodes to b"").
        let mut plugin_data = Vec::new();
        put_bytes(&mut plugin_data, 1, b"text");
        let mut metadata = Vec::new();
        put_bytes(&mut metadata, 1, &plugin_data);

        let mut summary_value = Vec::with_capacity(tag.len() + tensor.len() + metadata.len() + 8);
        put_bytes(&mut summary_value, 1, tag.as_bytes());
        put_bytes(&mut summary_value, 8, &tensor);
        put_bytes(&mut summary_value, 9, &metadata);
        self.write_summary(&summary_value, step)
    }

    /// Force written events to disk (fsync). Events already survive a killed process without it.
    pub fn flush(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("syncing event file {}", self.path.display()))
    }

    fn write_summary(&mut self, summary_value: &[u8], step: i64) -> Result<()> {
        let mut summary = Vec::with_capacity(summary_value.len() + 4);
        put_bytes(&mut summary, 1, summary_value);
        let mut event = event_header(unix_time(), step);
        put_bytes(&mut event, 5, &summary);
        self.write_record(&event)
    }

    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        let record = tfrecord(data);
        self.file
            .write_all(&record)
            .with_context(|| format!("writing event file {}", self.path.display()))
    }
}

/// TFRecord framing: u64 length, masked CRC32C of the length bytes, data, masked CRC32C of data
/// (all little-endian).
fn tfrecord(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// TFRecord's CRC mask: rotate right by 15 and add a constant, so CRCs of CRCs stay well-mixed.
fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

// Protobuf wire format (only what `Event`/`Summary` need).
const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;
const DT_STRING: u64 = 7;

/// `Event { wall_time = 1 (double), step = 2 (int64) }`; proto3 omits a zero step.
fn event_header(wall_time: f64, step: i64) -> Vec<u8> {
    let mut event = Vec::with_capacity(64);
    put_key(&mut event, 1, WIRE_FIXED64);
    event.extend_from_slice(&wall_time.to_le_bytes());
    if step != 0 {
        put_varint_field(&mut event, 2, step as u64);
    }
    event
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(out, (field << 3) | wire);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    put_key(out, field, WIRE_VARINT);
    put_varint(out, v);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(out, field, WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn unix_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The host name for the file name (as TF puts it there); only characters safe in a file name.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}
