/// An ISO 20022 pain.002 CustomerPaymentStatusReport: the bank's answer to a pain.001, at the
/// level of the group (the whole message), of each payment information block, and of each
/// transaction.
public struct PaymentStatusReport: Sendable, Hashable, Codable {
  public struct Reason: Sendable, Hashable, Codable {
    /// ISO external status reason code (AC04, AM04, DUPL, …), or the proprietary one.
    public var code = ""
    public var additionalInfo = ""

    public init(code: String = "", additionalInfo: String = "") {
      self.code = code
      self.additionalInfo = additionalInfo
    }
  }

  public struct PaymentInformationStatus: Sendable, Hashable, Codable {
    public var paymentInformationID = ""
    public var status = ""
    public var reasons: [Reason] = []
  }

  public struct TransactionStatus: Sendable, Hashable, Codable {
    public var statusID = ""
    public var paymentInformationID = ""
    public var instructionID = ""
    public var endToEndID = ""
    public var uetr = ""
    /// ACTC, ACCP, ACSP, ACSC, ACWC, PDNG, RJCT, …
    public var status = ""
    public var reasons: [Reason] = []
  }

  public var messageID = ""
  public var createdAt = ""
  public var originalMessageID = ""
  public var originalMessageName = ""
  /// The status of the whole original message, when the bank gives one.
  public var groupStatus = ""
  public var groupReasons: [Reason] = []
  public var paymentInformation: [PaymentInformationStatus] = []
  public var transactions: [TransactionStatus] = []

  public init() {}
}

/// Reads pain.002.001.03 to .001.12 (the elements the versions share, read by path).
public enum Pain002Reader {
  public static let versions = 3...12
  /// Transactions kept from one report.
  public static let maxTransactions = 1_000_000

  public static func read(_ source: FormatSource) throws -> PaymentStatusReport {
    let state = Pain002State()
    try XMLWalker.walk(source, format: "pain.002", onStart: { try state.start($0) }, onEnd: { try state.end($0, $1) })
    guard state.sawMessage else {
      throw FormatError(format: "pain.002", line: 0, location: "", reason: "no CstmrPmtStsRpt message in the file")
    }
    guard !state.report.originalMessageID.isEmpty else {
      throw FormatError(format: "pain.002", line: 0, location: "Document/CstmrPmtStsRpt/OrgnlGrpInfAndSts/OrgnlMsgId", reason: "is required")
    }
    return state.report
  }
}

private final class Pain002State {
  var report = PaymentStatusReport()
  var paymentInformation: PaymentStatusReport.PaymentInformationStatus?
  var transaction: PaymentStatusReport.TransactionStatus?
  var reason: PaymentStatusReport.Reason?
  var sawMessage = false

  func fail(_ element: XMLWalker.Element, _ reason: String) -> FormatError {
    FormatError(format: "pain.002", line: 0, location: element.path.joined(separator: "/"), reason: reason)
  }

  func start(_ element: XMLWalker.Element) throws {
    let path = element.path
    if path.count == 1 {
      guard path[0] == "Document" else { throw self.fail(element, "the root element is \(path[0]), not Document") }
      let prefix = "urn:iso:std:iso:20022:tech:xsd:pain.002.001."
      guard element.namespace.hasPrefix(prefix), let version = Int(element.namespace.dropFirst(prefix.count)),
        Pain002Reader.versions.contains(version)
      else {
        throw self.fail(element, "the namespace '\(element.namespace)' is not pain.002.001.03 to .12")
      }
    }
    if path.count == 2 {
      guard path[1] == "CstmrPmtStsRpt" else { throw self.fail(element, "not a pain.002 message (\(path[1]))") }
      self.sawMessage = true
    }
    guard path.count >= 3 else { return }
    switch String(element.key(from: 2)) {
    case "OrgnlPmtInfAndSts": self.paymentInformation = .init()
    case "OrgnlPmtInfAndSts/TxInfAndSts", "TxInfAndSts": self.transaction = .init()
    default: if path.last == "StsRsnInf" { self.reason = .init() }
    }
  }

  func end(_ element: XMLWalker.Element, _ text: String) throws {
    let path = element.path
    guard path.count >= 3 else { return }
    // Reasons, at the group, payment information or transaction level.
    if path.count >= 4, path[path.count - 2] == "Rsn", path.last == "Cd" || path.last == "Prtry" {
      self.reason?.code = text
      return
    }
    if path.last == "AddtlInf", path.dropLast().last == "StsRsnInf" {
      // Several AddtlInf lines join into one, at most maxTextBytes long.
      guard let info = self.reason?.additionalInfo, info.utf8.count < FormatLimits.maxTextBytes else { return }
      self.reason?.additionalInfo = FormatValues.clip(info.isEmpty ? text : info + " " + text)
      return
    }
    if path.last == "StsRsnInf", let reason = self.reason {
      self.reason = nil
      // At most maxReasonsPerStatus per level; more are not kept.
      if self.transaction != nil {
        if (self.transaction?.reasons.count ?? 0) < FormatLimits.maxReasonsPerStatus { self.transaction?.reasons.append(reason) }
      } else if self.paymentInformation != nil {
        if (self.paymentInformation?.reasons.count ?? 0) < FormatLimits.maxReasonsPerStatus { self.paymentInformation?.reasons.append(reason) }
      } else if self.report.groupReasons.count < FormatLimits.maxReasonsPerStatus {
        self.report.groupReasons.append(reason)
      }
      return
    }
    switch String(element.key(from: 2)) {
    case "GrpHdr/MsgId": self.report.messageID = text
    case "GrpHdr/CreDtTm": self.report.createdAt = text
    case "OrgnlGrpInfAndSts/OrgnlMsgId": self.report.originalMessageID = text
    case "OrgnlGrpInfAndSts/OrgnlMsgNmId": self.report.originalMessageName = text
    case "OrgnlGrpInfAndSts/GrpSts": self.report.groupStatus = text
    case "OrgnlPmtInfAndSts/OrgnlPmtInfId": self.paymentInformation?.paymentInformationID = text
    case "OrgnlPmtInfAndSts/PmtInfSts": self.paymentInformation?.status = text
    case "OrgnlPmtInfAndSts/TxInfAndSts/StsId", "TxInfAndSts/StsId": self.transaction?.statusID = text
    case "OrgnlPmtInfAndSts/TxInfAndSts/OrgnlInstrId", "TxInfAndSts/OrgnlInstrId": self.transaction?.instructionID = text
    case "OrgnlPmtInfAndSts/TxInfAndSts/OrgnlEndToEndId", "TxInfAndSts/OrgnlEndToEndId": self.transaction?.endToEndID = text
    case "OrgnlPmtInfAndSts/TxInfAndSts/OrgnlUETR", "TxInfAndSts/OrgnlUETR": self.transaction?.uetr = text
    case "OrgnlPmtInfAndSts/TxInfAndSts/TxSts", "TxInfAndSts/TxSts": self.transaction?.status = text
    case "OrgnlPmtInfAndSts/TxInfAndSts", "TxInfAndSts":
      if var transaction = self.transaction {
        if transaction.paymentInformationID.isEmpty { transaction.paymentInformationID = self.paymentInformation?.paymentInformationID ?? "" }
        guard self.report.transactions.count < Pain002Reader.maxTransactions else {
          throw self.fail(element, "more than \(Pain002Reader.maxTransactions) transactions in one report")
        }
        self.report.transactions.append(transaction)
      }
      self.transaction = nil
    case "OrgnlPmtInfAndSts":
      if let paymentInformation = self.paymentInformation { self.report.paymentInformation.append(paymentInformation) }
      self.paymentInformation = nil
    default: break
    }
  }
}
