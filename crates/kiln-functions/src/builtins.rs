//! The builtin Kiln functions: specs and DataFusion implementations.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeBinaryArray, ListArray, PrimitiveArray, StringArray,
};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{
    ArrowTimestampType, DataType, Field, FieldRef, IntervalUnit, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::hex::hex32;
use crate::secrets::Secrets;
use crate::spec::{ArgSpec, FunctionKind, FunctionSpec};

const STRINGS: &str = "Utf8 | LargeUtf8 | Utf8View | Binary | LargeBinary | BinaryView";

fn user_defined(names: &[&str]) -> Signature {
    let signature = Signature::user_defined(Volatility::Immutable);
    if names.is_empty() {
        return signature;
    }
    // A fixed list of names is always valid for a user-defined signature.
    signature.clone().with_parameter_names(names.to_vec()).unwrap_or(signature)
}

fn is_bytes(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}

/// Applies `digest` to every non-null value of a string or binary array and writes its
/// lowercase hex into one contiguous Utf8 buffer. NULL in, NULL out.
fn hex_digest_array(array: &ArrayRef, name: &str, digest: impl Fn(&[u8]) -> [u8; 32]) -> Result<ArrayRef> {
    /// One pass over the values: digest, 64 hex digits appended, offset pushed.
    fn run<'a>(
        values_in: impl Iterator<Item = Option<&'a [u8]>>,
        digest: impl Fn(&[u8]) -> [u8; 32],
        values: &mut Vec<u8>,
        offsets: &mut Vec<i32>,
    ) {
        for v in values_in {
            if let Some(v) = v {
                values.extend_from_slice(&hex32(&digest(v)));
            }
            // Cannot overflow: the caller bounds the output to i32::MAX bytes up front.
            offsets.push(values.len() as i32);
        }
    }
    let n = array.len();
    let valid = n - array.null_count();
    if valid.checked_mul(64).is_none_or(|bytes| bytes > i32::MAX as usize) {
        return exec_err!("{name}: hex output of {valid} values exceeds 2 GiB in one batch");
    }
    let mut values = Vec::with_capacity(valid * 64);
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0i32);
    let (v, o) = (&mut values, &mut offsets);
    match array.data_type() {
        DataType::Utf8 => run(array.as_string::<i32>().iter().map(|s| s.map(str::as_bytes)), digest, v, o),
        DataType::LargeUtf8 => run(array.as_string::<i64>().iter().map(|s| s.map(str::as_bytes)), digest, v, o),
        DataType::Utf8View => run(array.as_string_view().iter().map(|s| s.map(str::as_bytes)), digest, v, o),
        DataType::Binary => run(array.as_binary::<i32>().iter(), digest, v, o),
        DataType::LargeBinary => run(array.as_binary::<i64>().iter(), digest, v, o),
        DataType::BinaryView => run(array.as_binary_view().iter(), digest, v, o),
        other => return exec_err!("{name}: expected a string or binary value, got {other}"),
    }
    let out = StringArray::try_new(
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Buffer::from_vec(values),
        array.nulls().cloned(),
    )?;
    Ok(Arc::new(out))
}

fn coerce_bytes(name: &str, t: &DataType) -> Result<DataType> {
    match t {
        t if is_bytes(t) => Ok(t.clone()),
        DataType::Null => Ok(DataType::Utf8),
        DataType::Dictionary(_, v) if is_bytes(v) => Ok(v.as_ref().clone()),
        other => plan_err!("{name}: `value` must be a string or binary, got {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// kiln_sha256_hex

pub static SHA256_HEX: LazyLock<FunctionSpec> = LazyLock::new(|| FunctionSpec {
    id: "kiln.sha256_hex.v1",
    name: "kiln_sha256_hex",
    kind: FunctionKind::Scalar,
    args: vec![ArgSpec { name: "value", types: STRINGS, literal: false }],
    variadic: false,
    returns: "Utf8 (64 lowercase hex digits)",
    volatility: "immutable",
    deterministic: true,
    null_semantics: "NULL in, NULL out",
    optimizer_transparent: true,
    implementation_version: 1,
    doc: "SHA-256 of the value's bytes (UTF-8 for strings) as lowercase hex.",
    example: "SELECT kiln_sha256_hex('abc') -- ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
});

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Sha256Hex {
    signature: Signature,
}

impl Default for Sha256Hex {
    fn default() -> Self {
        Self { signature: user_defined(&["value"]) }
    }
}

impl ScalarUDFImpl for Sha256Hex {
    fn name(&self) -> &str {
        SHA256_HEX.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [t] => Ok(vec![coerce_bytes(self.name(), t)?]),
            _ => plan_err!("kiln_sha256_hex takes one argument (value), got {}", arg_types.len()),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let array = args.args[0].to_array(args.number_rows)?;
        let out = hex_digest_array(&array, self.name(), |v| Sha256::digest(v).into())?;
        Ok(ColumnarValue::Array(out))
    }
}

// ---------------------------------------------------------------------------------------
// kiln_pii_hash

pub static PII_HASH: LazyLock<FunctionSpec> = LazyLock::new(|| FunctionSpec {
    id: "kiln.pii_hash.v1",
    name: "kiln_pii_hash",
    kind: FunctionKind::Scalar,
    args: vec![
        ArgSpec { name: "value", types: STRINGS, literal: false },
        ArgSpec { name: "key", types: "Utf8: the name of a secret in kiln.toml [secrets]", literal: true },
    ],
    variadic: false,
    returns: "Utf8 (64 lowercase hex digits)",
    volatility: "immutable",
    deterministic: true,
    null_semantics: "NULL in, NULL out",
    optimizer_transparent: false,
    implementation_version: 1,
    doc: "HMAC-SHA256 of the value keyed by a project secret, as lowercase hex. The secret's value never \
          appears in plans, artifacts or errors; rotating it changes the function fingerprint, so \
          every product that uses it rebuilds.",
    example: "SELECT kiln_pii_hash(c_phone, key => 'pii_key') AS phone_hash FROM customer",
});

/// `kiln_pii_hash`. Holds the run's secrets; `Debug` shows only their names.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PiiHash {
    signature: Signature,
    secrets: Arc<Secrets>,
}

impl PiiHash {
    pub fn new(secrets: Arc<Secrets>) -> Self {
        Self { signature: user_defined(&["value", "key"]), secrets }
    }

    fn key_name(arg: Option<&ScalarValue>) -> Result<String> {
        match arg {
            Some(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s))) => {
                Ok(s.clone())
            }
            _ => plan_err!("kiln_pii_hash: `key` must be a string literal naming a secret, e.g. key => 'pii_key'"),
        }
    }
}

impl ScalarUDFImpl for PiiHash {
    fn name(&self) -> &str {
        PII_HASH.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [v, k] if is_bytes(k) || k == &DataType::Null => Ok(vec![coerce_bytes(self.name(), v)?, k.clone()]),
            [_, k] => plan_err!("kiln_pii_hash: `key` must be a string literal, got {k}"),
            _ => plan_err!("kiln_pii_hash takes two arguments (value, key => 'secret'), got {}", arg_types.len()),
        }
    }
    /// Checks at planning time that the key is a literal naming a resolvable secret, so a
    /// missing secret fails compilation with the product's location.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let name = Self::key_name(args.scalar_arguments.get(1).copied().flatten())?;
        if let Err(reason) = self.secrets.get(&name) {
            return plan_err!("kiln_pii_hash: {reason}");
        }
        let nullable = args.arg_fields.first().is_none_or(|f| f.is_nullable());
        Ok(Arc::new(Field::new(self.name(), DataType::Utf8, nullable)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = match &args.args[1] {
            ColumnarValue::Scalar(s) => Self::key_name(Some(s))?,
            ColumnarValue::Array(_) => return exec_err!("kiln_pii_hash: `key` must be a literal"),
        };
        let secret = match self.secrets.get(&name) {
            Ok(s) => s,
            Err(reason) => return exec_err!("kiln_pii_hash: {reason}"),
        };
        // The keyed state (key XOR ipad/opad absorbed) is computed once per batch and
        // cloned per value.
        let Ok(mac) = Hmac::<Sha256>::new_from_slice(secret.expose()) else {
            return exec_err!("kiln_pii_hash: secret `{name}` cannot key HMAC");
        };
        let array = args.args[0].to_array(args.number_rows)?;
        let out =
            hex_digest_array(&array, self.name(), |v| mac.clone().chain_update(v).finalize().into_bytes().into())?;
        Ok(ColumnarValue::Array(out))
    }
}

// ---------------------------------------------------------------------------------------
// kiln_stable_id

pub static STABLE_ID: LazyLock<FunctionSpec> = LazyLock::new(|| FunctionSpec {
    id: "kiln.stable_id.v1",
    name: "kiln_stable_id",
    kind: FunctionKind::Scalar,
    args: vec![ArgSpec {
        name: "value",
        types: "integers, floats, Boolean, strings, binaries, Date32, Timestamp, Decimal128",
        literal: false,
    }],
    variadic: true,
    returns: "FixedSizeBinary(16) with extension kiln.stable_id",
    volatility: "immutable",
    deterministic: true,
    null_semantics: "NULL is encoded as a value distinct from every non-NULL value; never returns NULL",
    optimizer_transparent: true,
    implementation_version: 1,
    doc: "A deterministic 128-bit id of typed values: the first 16 bytes of SHA-256 over \
          \"kiln.stable_id.v1\" and, per argument, a type tag, a null flag and a length-prefixed \
          payload (docs/functions.md). Integers of any width encode as 64-bit, floats as f64 bits \
          (with -0.0 = 0.0 and one NaN), string and binary encodings as their bytes, timestamps as \
          nanoseconds, decimals with their scale. Stable across runs, machines and batches.",
    example: "SELECT kiln_stable_id(o_orderkey, l_linenumber) AS line_id FROM lineitem",
});

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct StableId {
    signature: Signature,
}

impl Default for StableId {
    fn default() -> Self {
        Self { signature: user_defined(&[]) }
    }
}

/// Appends the documented encoding of row `i` of `a` to `buf`.
fn encode_value(buf: &mut Vec<u8>, a: &ArrayRef, i: usize) -> Result<()> {
    use DataType as D;
    let tag = match a.data_type() {
        D::Int8 | D::Int16 | D::Int32 | D::Int64 => b'i',
        D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64 => b'u',
        D::Float16 | D::Float32 | D::Float64 => b'f',
        D::Boolean => b'b',
        D::Utf8 | D::LargeUtf8 | D::Utf8View => b's',
        D::Binary | D::LargeBinary | D::BinaryView => b'x',
        D::Date32 => b'd',
        D::Timestamp(..) => b't',
        D::Decimal128(..) => b'm',
        D::Null => b'n',
        other => return exec_err!("kiln_stable_id: unsupported type {other}"),
    };
    buf.push(tag);
    if a.is_null(i) {
        buf.push(0);
        return Ok(());
    }
    buf.push(1);
    let mut bytes = |b: &[u8]| {
        buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
        buf.extend_from_slice(b);
    };
    use datafusion::arrow::datatypes as t;
    match a.data_type() {
        D::Int8 => bytes(&i64::from(a.as_primitive::<t::Int8Type>().value(i)).to_le_bytes()),
        D::Int16 => bytes(&i64::from(a.as_primitive::<t::Int16Type>().value(i)).to_le_bytes()),
        D::Int32 => bytes(&i64::from(a.as_primitive::<t::Int32Type>().value(i)).to_le_bytes()),
        D::Int64 => bytes(&a.as_primitive::<t::Int64Type>().value(i).to_le_bytes()),
        D::UInt8 => bytes(&u64::from(a.as_primitive::<t::UInt8Type>().value(i)).to_le_bytes()),
        D::UInt16 => bytes(&u64::from(a.as_primitive::<t::UInt16Type>().value(i)).to_le_bytes()),
        D::UInt32 => bytes(&u64::from(a.as_primitive::<t::UInt32Type>().value(i)).to_le_bytes()),
        D::UInt64 => bytes(&a.as_primitive::<t::UInt64Type>().value(i).to_le_bytes()),
        D::Float16 | D::Float32 | D::Float64 => {
            let v = match a.data_type() {
                D::Float16 => f64::from(a.as_primitive::<t::Float16Type>().value(i)),
                D::Float32 => f64::from(a.as_primitive::<t::Float32Type>().value(i)),
                _ => a.as_primitive::<t::Float64Type>().value(i),
            };
            let canonical = if v.is_nan() {
                f64::NAN
            } else if v == 0.0 {
                0.0
            } else {
                v
            };
            bytes(&canonical.to_bits().to_le_bytes());
        }
        D::Boolean => bytes(&[u8::from(a.as_boolean().value(i))]),
        D::Utf8 => bytes(a.as_string::<i32>().value(i).as_bytes()),
        D::LargeUtf8 => bytes(a.as_string::<i64>().value(i).as_bytes()),
        D::Utf8View => bytes(a.as_string_view().value(i).as_bytes()),
        D::Binary => bytes(a.as_binary::<i32>().value(i)),
        D::LargeBinary => bytes(a.as_binary::<i64>().value(i)),
        D::BinaryView => bytes(a.as_binary_view().value(i)),
        D::Date32 => bytes(&a.as_primitive::<t::Date32Type>().value(i).to_le_bytes()),
        D::Timestamp(unit, _) => {
            let (v, per) = match unit {
                TimeUnit::Second => (a.as_primitive::<TimestampSecondType>().value(i), 1_000_000_000),
                TimeUnit::Millisecond => (a.as_primitive::<TimestampMillisecondType>().value(i), 1_000_000),
                TimeUnit::Microsecond => (a.as_primitive::<TimestampMicrosecondType>().value(i), 1_000),
                TimeUnit::Nanosecond => (a.as_primitive::<TimestampNanosecondType>().value(i), 1),
            };
            let Some(ns) = v.checked_mul(per) else {
                return exec_err!("kiln_stable_id: timestamp {v} does not fit in nanoseconds");
            };
            bytes(&ns.to_le_bytes());
        }
        D::Decimal128(_, scale) => {
            let v = a.as_primitive::<t::Decimal128Type>().value(i);
            let mut payload = vec![*scale as u8];
            payload.extend_from_slice(&v.to_le_bytes());
            bytes(&payload);
        }
        _ => {}
    }
    Ok(())
}

impl ScalarUDFImpl for StableId {
    fn name(&self) -> &str {
        STABLE_ID.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::FixedSizeBinary(16))
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.is_empty() {
            return plan_err!("kiln_stable_id needs at least one argument");
        }
        arg_types
            .iter()
            .map(|t| match t {
                DataType::Dictionary(_, v) => Ok(v.as_ref().clone()),
                DataType::Decimal256(..) | DataType::List(_) | DataType::Struct(_) | DataType::Map(..) => {
                    plan_err!("kiln_stable_id: unsupported argument type {t}")
                }
                other => Ok(other.clone()),
            })
            .collect()
    }
    fn return_field_from_args(&self, _: ReturnFieldArgs) -> Result<FieldRef> {
        let field = Field::new(self.name(), DataType::FixedSizeBinary(16), false)
            .with_metadata([(kiln_contracts::contract::EXTENSION_KEY.to_owned(), "kiln.stable_id".to_owned())].into());
        Ok(Arc::new(field))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = args.args.iter().map(|a| a.to_array(n)).collect::<Result<Vec<_>>>()?;
        let seeded = Sha256::new_with_prefix(b"kiln.stable_id.v1");
        let mut out = Vec::with_capacity(n * 16);
        let mut buf = Vec::with_capacity(64);
        for i in 0..n {
            buf.clear();
            for a in &arrays {
                encode_value(&mut buf, a, i)?;
            }
            out.extend_from_slice(&seeded.clone().chain_update(&buf).finalize()[..16]);
        }
        Ok(ColumnarValue::Array(Arc::new(FixedSizeBinaryArray::try_new(16, Buffer::from_vec(out), None)?)))
    }
}

// ---------------------------------------------------------------------------------------
// Window helpers: kiln_tumble_start, kiln_tumble_end, kiln_hop_starts

fn window_spec(
    id: &'static str,
    name: &'static str,
    args: Vec<ArgSpec>,
    returns: &'static str,
    doc: &'static str,
    example: &'static str,
) -> FunctionSpec {
    FunctionSpec {
        id,
        name,
        kind: FunctionKind::Scalar,
        args,
        variadic: false,
        returns,
        volatility: "immutable",
        deterministic: true,
        null_semantics: "NULL timestamp in, NULL out",
        optimizer_transparent: true,
        implementation_version: 1,
        doc,
        example,
    }
}

const TS: ArgSpec = ArgSpec { name: "ts", types: "Timestamp (any unit and zone)", literal: false };

pub static TUMBLE_START: LazyLock<FunctionSpec> = LazyLock::new(|| {
    window_spec(
        "kiln.tumble_start.v1",
        "kiln_tumble_start",
        vec![TS, ArgSpec { name: "size", types: "Interval (days, hours, ...; no months)", literal: true }],
        "the type of ts",
        "Start of the epoch-aligned tumbling window of the given size that contains ts; windows are half-open [start, start + size).",
        "SELECT kiln_tumble_start(ts, INTERVAL '1' HOUR), COUNT(*) FROM events GROUP BY 1",
    )
});

pub static TUMBLE_END: LazyLock<FunctionSpec> = LazyLock::new(|| {
    window_spec(
        "kiln.tumble_end.v1",
        "kiln_tumble_end",
        vec![TS, ArgSpec { name: "size", types: "Interval (days, hours, ...; no months)", literal: true }],
        "the type of ts",
        "End (exclusive) of the epoch-aligned tumbling window that contains ts: kiln_tumble_start(ts, size) + size.",
        "SELECT kiln_tumble_end(ts, size => INTERVAL '10' MINUTE) FROM events",
    )
});

pub static HOP_STARTS: LazyLock<FunctionSpec> = LazyLock::new(|| {
    window_spec(
        "kiln.hop_starts.v1",
        "kiln_hop_starts",
        vec![
            TS,
            ArgSpec { name: "slide", types: "Interval (no months)", literal: true },
            ArgSpec { name: "size", types: "Interval (no months), >= slide", literal: true },
        ],
        "List of the type of ts, ascending",
        "Starts of every hopping window that contains ts: windows start at multiples of slide (from the epoch) and cover [start, start + size). UNNEST the list to assign a row to each of its windows.",
        "SELECT w, COUNT(*) FROM (SELECT unnest(kiln_hop_starts(ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND)) AS w FROM bids) GROUP BY w",
    )
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum WindowOp {
    TumbleStart,
    TumbleEnd,
    HopStarts,
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WindowFn {
    op: WindowOp,
    signature: Signature,
}

impl WindowFn {
    pub fn tumble_start() -> Self {
        Self { op: WindowOp::TumbleStart, signature: user_defined(&["ts", "size"]) }
    }
    pub fn tumble_end() -> Self {
        Self { op: WindowOp::TumbleEnd, signature: user_defined(&["ts", "size"]) }
    }
    pub fn hop_starts() -> Self {
        Self { op: WindowOp::HopStarts, signature: user_defined(&["ts", "slide", "size"]) }
    }
    fn spec(&self) -> &'static FunctionSpec {
        match self.op {
            WindowOp::TumbleStart => &TUMBLE_START,
            WindowOp::TumbleEnd => &TUMBLE_END,
            WindowOp::HopStarts => &HOP_STARTS,
        }
    }
}

/// An interval literal as ticks of `unit`: months are rejected (no fixed length), the
/// interval must be positive and a whole number of ticks.
fn interval_ticks(name: &str, what: &str, v: &ColumnarValue, unit: TimeUnit) -> Result<i64> {
    let ColumnarValue::Scalar(ScalarValue::IntervalMonthDayNano(Some(iv))) = v else {
        return exec_err!("{name}: `{what}` must be an interval literal such as INTERVAL '1' HOUR");
    };
    if iv.months != 0 {
        return exec_err!("{name}: `{what}` has months, which have no fixed length; use days");
    }
    let ns = i128::from(iv.days) * 86_400_000_000_000 + i128::from(iv.nanoseconds);
    let per: i128 = match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    if ns <= 0 {
        return exec_err!("{name}: `{what}` must be positive");
    }
    if ns % per != 0 {
        return exec_err!("{name}: `{what}` is finer than the timestamp's unit {unit:?}");
    }
    i64::try_from(ns / per).or_else(|_| exec_err!("{name}: `{what}` is too large"))
}

fn window_typed<T: ArrowTimestampType>(
    op: WindowOp,
    a: &ArrayRef,
    args: &[ColumnarValue],
    name: &str,
    unit: TimeUnit,
) -> Result<ArrayRef> {
    let ts = a.as_primitive::<T>();
    let tz = match a.data_type() {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    match op {
        WindowOp::TumbleStart | WindowOp::TumbleEnd => {
            let size = interval_ticks(name, "size", &args[1], unit)?;
            let shift = if op == WindowOp::TumbleEnd { size } else { 0 };
            let out: PrimitiveArray<T> = ts.unary(|v| v - v.rem_euclid(size) + shift);
            Ok(Arc::new(out.with_timezone_opt(tz)))
        }
        WindowOp::HopStarts => {
            let slide = interval_ticks(name, "slide", &args[1], unit)?;
            let size = interval_ticks(name, "size", &args[2], unit)?;
            if slide > size {
                return exec_err!("{name}: slide must not exceed size (windows would leave gaps)");
            }
            let mut values = Vec::new();
            let mut offsets = vec![0i32];
            for i in 0..ts.len() {
                if ts.is_valid(i) {
                    let v = ts.value(i);
                    let last = v - v.rem_euclid(slide);
                    // The earliest start s with s + size > v, stepping back by slide.
                    let mut first = last;
                    while first - slide + size > v {
                        first -= slide;
                    }
                    let mut s = first;
                    while s <= last {
                        values.push(s);
                        s += slide;
                    }
                }
                let Ok(end) = i32::try_from(values.len()) else { return exec_err!("{name}: too many windows") };
                offsets.push(end);
            }
            let values = PrimitiveArray::<T>::new(ScalarBuffer::from(values), None).with_timezone_opt(tz);
            let field = Arc::new(Field::new_list_field(values.data_type().clone(), false));
            let list = ListArray::try_new(
                field,
                OffsetBuffer::new(ScalarBuffer::from(offsets)),
                Arc::new(values),
                ts.nulls().cloned(),
            )?;
            Ok(Arc::new(list))
        }
    }
}

impl ScalarUDFImpl for WindowFn {
    fn name(&self) -> &str {
        self.spec().name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let ts = arg_types.first().cloned().unwrap_or(DataType::Null);
        Ok(match self.op {
            WindowOp::HopStarts => DataType::List(Arc::new(Field::new_list_field(ts, false))),
            _ => ts,
        })
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let want = if self.op == WindowOp::HopStarts { 3 } else { 2 };
        if arg_types.len() != want {
            return plan_err!("{} takes {want} arguments, got {}", self.name(), arg_types.len());
        }
        let mut out = Vec::with_capacity(want);
        out.push(match &arg_types[0] {
            t @ DataType::Timestamp(..) => t.clone(),
            DataType::Date32 | DataType::Date64 | DataType::Null => DataType::Timestamp(TimeUnit::Nanosecond, None),
            other => return plan_err!("{}: `ts` must be a timestamp, got {other}", self.name()),
        });
        for t in &arg_types[1..] {
            match t {
                DataType::Interval(_) => out.push(DataType::Interval(IntervalUnit::MonthDayNano)),
                other => return plan_err!("{}: expected an interval, got {other}", self.name()),
            }
        }
        Ok(out)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = args.args[0].to_array(args.number_rows)?;
        let name = self.name();
        let out = match a.data_type() {
            DataType::Timestamp(TimeUnit::Second, _) => {
                window_typed::<TimestampSecondType>(self.op, &a, &args.args, name, TimeUnit::Second)
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                window_typed::<TimestampMillisecondType>(self.op, &a, &args.args, name, TimeUnit::Millisecond)
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                window_typed::<TimestampMicrosecondType>(self.op, &a, &args.args, name, TimeUnit::Microsecond)
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                window_typed::<TimestampNanosecondType>(self.op, &a, &args.args, name, TimeUnit::Nanosecond)
            }
            other => exec_err!("{name}: `ts` must be a timestamp, got {other}"),
        }?;
        Ok(ColumnarValue::Array(out))
    }
}

// ---------------------------------------------------------------------------------------
// kiln_interval_start, kiln_interval_end: the days of an incremental product's batch

fn interval_spec(id: &'static str, name: &'static str, doc: &'static str, example: &'static str) -> FunctionSpec {
    FunctionSpec {
        id,
        name,
        kind: FunctionKind::Scalar,
        args: Vec::new(),
        variadic: false,
        returns: "Date32",
        volatility: "volatile",
        deterministic: true,
        null_semantics: "never NULL",
        optimizer_transparent: false,
        implementation_version: 1,
        doc,
        example,
    }
}

pub static INTERVAL_START: LazyLock<FunctionSpec> = LazyLock::new(|| {
    interval_spec(
        "kiln.interval_start.v1",
        "kiln_interval_start",
        "In an incremental product (incremental = 'by_time'), the first day of the intervals the running batch computes; \
         Kiln replaces the call by that date in each batch's plan. Write the interval filter with it where Kiln cannot \
         derive one (kiln plan says which applies). Outside such a build it is an error.",
        "SELECT * FROM events WHERE event_day >= kiln_interval_start() - INTERVAL '7' DAY AND event_day < kiln_interval_end()",
    )
});

pub static INTERVAL_END: LazyLock<FunctionSpec> = LazyLock::new(|| {
    interval_spec(
        "kiln.interval_end.v1",
        "kiln_interval_end",
        "In an incremental product, the day after the last day of the intervals the running batch computes \
         (exclusive): rows of the batch satisfy day >= kiln_interval_start() AND day < kiln_interval_end().",
        "SELECT * FROM events WHERE event_day < kiln_interval_end()",
    )
});

/// `kiln_interval_start()` / `kiln_interval_end()`: placeholders of an incremental
/// product's plan, volatile so that the optimizer neither folds nor moves them before
/// Kiln replaces them by the batch's dates.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct IntervalBound {
    end: bool,
    signature: Signature,
}

impl IntervalBound {
    pub fn start() -> Self {
        Self { end: false, signature: Signature::nullary(Volatility::Volatile) }
    }
    pub fn end() -> Self {
        Self { end: true, signature: Signature::nullary(Volatility::Volatile) }
    }
}

impl ScalarUDFImpl for IntervalBound {
    fn name(&self) -> &str {
        if self.end { INTERVAL_END.name } else { INTERVAL_START.name }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Date32)
    }
    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!(
            "{}() has a value only in an incremental product's build (incremental = 'by_time'), where each batch's plan holds its date",
            self.name()
        )
    }
}
