// Risk rule micro-benchmarks (ordo-one/benchmark): the evaluator without storage or gRPC, each
// beside a baseline measured in the same run.
//
//   make microbench          (both benchmark targets; this one alone:
//                             swift package benchmark --target RulesBenchmarks)
//
// - "rules: evaluate 1 rule (baseline)" is the baseline for "rules: evaluate 50 rules": one
//   payment's decision (every rule of the set, the explanation of those that fire, the decision
//   record) over the variables CreatePayment builds. Of the 50 rules, 2 fire.
// - "rules: compile 1-rule set (baseline)" is the baseline for "rules: compile 50-rule set":
//   parse, type-check and compile every expression and the lists, as PutRuleSet does.
import BankLinkCore
import BankLinkRules
import BankLinkServer
import Benchmark
import Foundation

/// Fifty rules of the kinds a treasury writes: the example set's, and variations of them over
/// other thresholds, countries and keywords. The last two fire on the benchmark's payment.
func fiftyRules() -> RiskRuleSet {
  var rules: [RiskRule] = [
    RiskRule(id: "sanctioned-country", expression: "payment.creditor.country in lists.sanctioned_countries", action: .block),
    RiskRule(id: "blocked-creditor", expression: "payment.creditor.account in lists.blocked_creditor_accounts", action: .block),
    RiskRule(id: "new-creditor-large", expression: "features.first_time_creditor && payment.amount >= 5000000", action: .review),
    RiskRule(id: "amount-off-habit", expression: "features.history_count >= 5 && features.amount_zscore > 4.0", action: .review),
    RiskRule(id: "possible-duplicate", expression: "features.duplicates_24h > 0", action: .review),
    RiskRule(id: "burst", expression: "features.count_1h >= 20", action: .review),
    RiskRule(id: "drains-account", expression: "account.available > 0 && payment.amount >= account.available / 10 * 9", action: .review),
    RiskRule(
      id: "off-hours-large",
      expression: "payment.amount >= 10000000 && (features.hour < 7 || features.hour >= 22 || features.weekday in [0, 6])",
      action: .review),
    RiskRule(id: "purpose-keywords", expression: "payment.purpose.matches('(?i)(gift ?card|crypto|casino|betting)')", action: .review),
  ]
  for index in 0..<20 {
    rules.append(
      RiskRule(
        id: "daily-sum-\(index)", expression: "features.sum_24h + payment.amount > \(100_000_000 + index * 1_000_000)", action: .review))
  }
  for index in 0..<10 {
    rules.append(
      RiskRule(
        id: "currency-cap-\(index)",
        expression: "payment.currency == 'USD' && payment.amount > \(1_000_000 + index) && payment.type == 'cross_border'", action: .review))
  }
  for index in 0..<9 {
    rules.append(
      RiskRule(
        id: "creditor-name-\(index)", expression: "payment.creditor.name.contains('Holding \(index)') || payment.creditor.bic.startsWith('XX\(index)')",
        action: .review))
  }
  rules.append(RiskRule(id: "fires-weekly", expression: "features.count_7d >= 3", action: .allow, shadow: true))
  rules.append(RiskRule(id: "fires-known-creditor", expression: "!features.first_time_creditor && features.days_since_creditor_first_paid > 30", action: .allow))
  precondition(rules.count == 50)
  return RiskRuleSet(
    rules: rules,
    lists: [
      "sanctioned_countries": ["KP", "IR", "SY", "CU", "RU", "BY", "VE", "MM"],
      "blocked_creditor_accounts": (0..<200).map { "62170000000000\(10_000 + $0)" },
    ])
}

func compiled(_ set: RiskRuleSet) -> CompiledRuleSet {
  switch CompiledRuleSet.compile(set) {
  case .success(let compiled): return compiled
  case .failure(let failure): fatalError("benchmark rule set does not compile: \(failure.issues)")
  }
}

func variables(_ set: CompiledRuleSet) -> [Value] {
  let instruction = PaymentInstruction(
    debtorAccountID: "icbc-cny-001",
    creditor: Creditor(name: "Jiangsu Hengrui Logistics Co., Ltd.", accountNumber: "3201 5501 0400 0087 761", bic: "PCBCCNBJ", country: "CN"),
    amount: Money(minorUnits: 1_234_56, currency: CurrencyCode("CNY")!), purpose: "Freight INV-77", requestedExecutionDate: "2026-12-03",
    type: .domestic)
  let account = Account(
    id: "icbc-cny-001", number: "1001 2345 6789 0001", iban: "", displayName: "Operating", bankBIC: "ICBKCNBJ", bankName: "ICBC",
    currency: CurrencyCode("CNY")!, status: .active)
  var features = FeatureSnapshot()
  features.count1h = 2
  features.count24h = 9
  features.count7d = 40
  features.sum24h = 9_000_000
  features.firstTimeCreditor = false
  features.daysSinceCreditorFirstPaid = 90
  features.historyCount = 400
  features.amountMean = 150_000
  features.amountStddev = 40_000
  features.amountZScore = -0.66
  features.ledger = 1_000_000_000
  features.available = 900_000_000
  return RiskVariables.values(
    instruction: instruction, creator: "erp", account: account, features: features,
    at: Instant(millisecondsSinceEpoch: 1_796_300_000_000))
}

let benchmarks: @Sendable () -> Void = {
  // A thousand decisions per sample (the figures are per decision): the harness's own cost per
  // sample (clocks, counters) would otherwise dominate a microsecond.
  let evaluate = Benchmark.Configuration(
    metrics: [.wallClock, .mallocCountTotal], scalingFactor: .kilo, maxDuration: .seconds(3), maxIterations: 2_000)
  let one = compiled(RiskRuleSet(rules: [RiskRule(id: "only", expression: "payment.amount > 100000000", action: .review)]))
  let fifty = compiled(fiftyRules())
  let oneValues = variables(one)
  let fiftyValues = variables(fifty)
  precondition(fifty.decide(fiftyValues).hits.count == 2, "two of the fifty rules fire on this payment")

  Benchmark("rules: evaluate 1 rule (baseline)", configuration: evaluate) { benchmark in
    for _ in benchmark.scaledIterations { blackHole(one.decide(oneValues)) }
  }

  Benchmark("rules: evaluate 50 rules", configuration: evaluate) { benchmark in
    for _ in benchmark.scaledIterations { blackHole(fifty.decide(fiftyValues)) }
  }

  let compile = Benchmark.Configuration(metrics: [.wallClock], maxDuration: .seconds(3), maxIterations: 2_000)
  let oneSet = one.ruleSet
  let fiftySet = fiftyRules()

  Benchmark("rules: compile 1-rule set (baseline)", configuration: compile) { benchmark in
    for _ in benchmark.scaledIterations { blackHole(CompiledRuleSet.compile(oneSet)) }
  }

  Benchmark("rules: compile 50-rule set", configuration: compile) { benchmark in
    for _ in benchmark.scaledIterations { blackHole(CompiledRuleSet.compile(fiftySet)) }
  }
}
