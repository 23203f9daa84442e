//! Host ops: the few ONNX ops that cannot be expressed in atoms with static shapes. They
//! stay high-level in the decomposed graph and run on the reference interpreter between
//! compiled parts, as does any node whose shapes depend on data (a reshape to a computed
//! shape). Any other op that stays high-level is a missing rule (reported). The importer
//! rejects control flow (If/Loop/Scan), strings and random ops, so they need no entry.

/// `(op, reason)` for every host op.
pub const HOST_OPS: &[(&str, &str)] = &[
    ("NonZero", "output length depends on the data"),
    ("Unique", "output length depends on the data"),
    ("Compress", "output length depends on the condition's values"),
];

/// Ops that are host ops only in some configurations: their rules lower every other case
/// and return [`host_only`] for these.
pub const HOST_CASES: &[(&str, &str)] = &[
    ("Dropout", "training mode with a nonzero or runtime ratio draws a random mask"),
    ("RoiAlign", "sampling_ratio 0 with runtime rois: the sample count depends on the data"),
];

/// The error a lowering rule returns for a node that must run on the host.
pub fn host_only(reason: &str) -> ir::Error {
    ir::Error::Unsupported(format!("{HOST_MARK}{reason}"))
}

const HOST_MARK: &str = "runs on the host: ";

/// The reason inside a [`host_only`] error message.
pub fn host_only_reason(msg: &str) -> Option<&str> {
    msg.split_once(HOST_MARK).map(|(_, r)| r)
}

/// Why `op` is a host op, if it is one.
pub fn reason(op: &str) -> Option<&'static str> {
    HOST_OPS.iter().find(|(o, _)| *o == op).map(|(_, r)| *r)
}
