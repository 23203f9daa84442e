//! The constants of the f32 polynomial transcendentals, shared by the backends that emit
//! them inline (`cranelift/vmath.rs`, `llvm/vmath.rs`): one set of coefficients, so both
//! backends compute the same functions with the same documented error bounds (the table in
//! `cranelift/vmath.rs`). Coefficients: weighted minimax fits from
//! `codegen/tools/vmath_coefs.py`.

/// 1.5 * 2^23: adding it rounds a float of magnitude below 2^22 to an integer (to nearest
/// even), which then sits in the low mantissa bits.
pub(crate) const MAGIC: f32 = 12_582_912.0;
pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 = LN2_HI + LN2_LO; LN2_HI has 15 significant bits, so `k * LN2_HI` is exact for the
/// exponents here (|k| < 2^9).
pub(crate) const LN2_HI: f32 = 0.693_145_75;
pub(crate) const LN2_LO: f32 = 1.428_606_8e-6;
/// exp(r) = 1 + r + r^2 P(r) on |r| <= 0.347.
pub(crate) const EXP_P: [f32; 5] = [
    0.499_999_94,
    0.166_665_2,
    0.041_668_396,
    0.008_368_797,
    0.001_381_443_3,
];
/// log: R(z) = z Q(z), z = s^2 <= 0.0295.
pub(crate) const LOG_Q: [f32; 4] = [0.666_666_6, 0.400_003_34, 0.285_373_24, 0.235_819_2];
/// tanh(x) = x + x^3 P(x^2) on |x| <= 0.625.
pub(crate) const TANH_CUT: f32 = 0.625;
pub(crate) const TANH_P: [f32; 6] = [
    -0.333_333_3,
    0.133_332_06,
    -0.053_946_763,
    0.021_700_703,
    -0.008_177_399,
    0.002_142_962,
];
/// erf(x) = x + x P(x^2) on |x| <= 0.875.
pub(crate) const ERF_CUT: f32 = 0.875;
pub(crate) const ERF_P: [f32; 7] = [
    0.128_379_17,
    -0.376_126_35,
    0.112_837_33,
    -0.026_861_586,
    0.005_206_748,
    -0.000_821_110_85,
    8.675_411e-5,
];
/// erf(x) = 1 - exp(-x^2 + G(x - ERF_MID)) on [0.875, 4].
pub(crate) const ERF_MID: f32 = 2.4375;
pub(crate) const ERF_MAX: f32 = 4.0;
pub(crate) const ERF_G: [f32; 10] = [
    -1.534_550_9,
    -0.359_823_23,
    0.058_194_228,
    -0.011_417_834,
    0.002_296_446_6,
    -0.000_455_227_2,
    8.586_416_5e-5,
    -5.766_628e-6,
    7.222_989_6e-6,
    1.233_181_6e-6,
];
/// 2/pi, and pi/2 = PIO2[0] + PIO2[1] + PIO2[2] + PIO2[3] (the first three have 11
/// significant bits, so `j * PIO2[i]` is exact for j < 2^13).
pub(crate) const TWO_OVER_PI: f32 = std::f32::consts::FRAC_2_PI;
pub(crate) const PIO2: [f32; 4] = [1.570_312_5, 0.000_483_751_3, 7.549_533_6e-8, 2.563_344e-12];
/// sin(r) = r + r^3 S(r^2), cos(r) = 1 - r^2/2 + r^4 C(r^2) on |r| <= 0.7875.
pub(crate) const SIN_S: [f32; 4] = [
    -0.166_666_67,
    0.008_333_329,
    -0.000_198_392_91,
    2.717_920_3e-6,
];
pub(crate) const COS_C: [f32; 4] = [
    0.041_666_668,
    -0.001_388_888_3,
    2.479_943_8e-5,
    -2.720_385_6e-7,
];

/// sinh(x) = x + x^3 P(x^2) on |x| <= 1.
pub(crate) const SINH_CUT: f32 = 1.0;
pub(crate) const SINH_P: [f32; 4] = [0.166_666_67, 0.008_333_35, 0.000_198_361_6, 2.816_951e-6];
/// atan(t) = t + t^3 P(t^2) on |t| <= tan(pi/8); above tan(3pi/8) atan x = pi/2 + atan(-1/x),
/// between them atan x = pi/4 + atan((x-1)/(x+1)).
pub(crate) const ATAN_P: [f32; 5] = [
    -0.333_333_16,
    0.199_984_71,
    -0.142_435_3,
    0.105_937_87,
    -0.060_781_5,
];
pub(crate) const TAN_PI_8: f32 = 0.414_213_57;
pub(crate) const TAN_3PI_8: f32 = 2.414_213_7;
/// pi/2 and pi/4 as a float and the rest.
pub(crate) const PIO2_HI: f32 = std::f32::consts::FRAC_PI_2;
pub(crate) const PIO2_LO: f32 = -4.371_139e-8;
pub(crate) const PIO4_HI: f32 = std::f32::consts::FRAC_PI_4;
pub(crate) const PIO4_LO: f32 = -2.185_569_5e-8;

