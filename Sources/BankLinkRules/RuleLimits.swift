/// Every limit of the rule language, named (docs/rules.md lists them).
public enum RuleLimits {
  /// Longest expression source, in UTF-8 bytes.
  public static let maxExpressionBytes = 4_096
  /// Deepest syntactic nesting (parentheses, brackets, calls, unary operators).
  public static let maxNestingDepth = 32
  /// Deepest tree after parsing: long chains of `+` or `==` nest as deep as they are long
  /// (`&&` and `||` chains are flattened and do not count).
  public static let maxTreeDepth = 128
  /// Elements of one list or map literal.
  public static let maxLiteralElements = 1_000
  /// Work of one evaluation, in steps: one per macro iteration, and for `matches` one plus its
  /// text length times its program size over ``regexWorkPerStep``. A rule over large lists (or
  /// macros nested over them, or patterns over long texts) fails with an error instead of
  /// running on: about 10 ms of work at most.
  public static let maxEvaluationSteps = 100_000
  /// Work of all the rules of one decision together (each within its own budget above).
  public static let maxDecisionSteps = 1_000_000
  /// List elements walked, built or kept (comparisons, membership in a computed list, list and
  /// map literals, `map` results) that count as one step.
  public static let elementsPerStep = 16
  /// Byte comparisons of `contains` (text × needle at worst) that count as one step.
  public static let bytesPerStep = 4_096
  /// Bytes of a string or bytes value built by `+`, or compared by `==`/`!=`/ordering, that
  /// count as one step: building and comparing large values is work like any other (a macro
  /// concatenating 64 KiB values would otherwise copy gigabytes within its step budget).
  public static let bytesBuiltPerStep = 1_024
  /// The largest string or bytes value `+` builds, and the longest list.
  public static let maxValueBytes = 65_536
  public static let maxValueElements = 10_000
  /// Regex instructions per text byte that count as one step.
  public static let regexWorkPerStep = 100
}
