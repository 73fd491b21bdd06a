//! Whole-file compression codecs of CSV and JSON source files.

/// A whole-file compression codec, decoded by DataFusion's readers (its `compression`
/// feature) and, for the checked reader, by the same decoders
/// (`FileCompressionType::convert_read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Codec {
    None,
    Gzip,
    Zstd,
    Bzip2,
    Xz,
}

impl Codec {
    /// `compression = '<name>'`: a codec, or `None` for `auto` and unknown names.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "none" | "uncompressed" => Some(Self::None),
            "gzip" | "gz" => Some(Self::Gzip),
            "zstd" | "zst" => Some(Self::Zstd),
            "bzip2" | "bz2" => Some(Self::Bzip2),
            "xz" => Some(Self::Xz),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Bzip2 => "bzip2",
            Self::Xz => "xz",
        }
    }

    /// The file-name suffixes that mark a file compressed with it.
    pub(crate) fn suffixes(self) -> &'static [&'static str] {
        match self {
            Self::None => &[],
            Self::Gzip => &[".gz", ".gzip"],
            Self::Zstd => &[".zst", ".zstd"],
            Self::Bzip2 => &[".bz2"],
            Self::Xz => &[".xz"],
        }
    }

    pub(crate) const COMPRESSED: [Codec; 4] = [Self::Gzip, Self::Zstd, Self::Bzip2, Self::Xz];

    /// The codec a file's name says (`None` when it names none).
    pub(crate) fn of_name(name: &str) -> Self {
        let lower = name.to_ascii_lowercase();
        Self::COMPRESSED.into_iter().find(|c| c.suffixes().iter().any(|s| lower.ends_with(s))).unwrap_or(Self::None)
    }

    /// DataFusion's equivalent.
    pub fn file_compression_type(
        self,
    ) -> datafusion::datasource::file_format::file_compression_type::FileCompressionType {
        use datafusion::datasource::file_format::file_compression_type::FileCompressionType as T;
        match self {
            Self::None => T::UNCOMPRESSED,
            Self::Gzip => T::GZIP,
            Self::Zstd => T::ZSTD,
            Self::Bzip2 => T::BZIP2,
            Self::Xz => T::XZ,
        }
    }
}
