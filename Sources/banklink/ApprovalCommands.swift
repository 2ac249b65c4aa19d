import ArgumentParser
import BankLinkClient
import BankLinkCommandLine
import BankLinkCore
import BankLinkPKI
import BankLinkProto
import Foundation
import GRPCCore
import SwiftProtobuf
import X509

struct ApprovalsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "approvals",
    abstract: "List the payments you may approve now (approver).",
    subcommands: [List.self], defaultSubcommand: List.self)

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Payments waiting for your approval, oldest first.")
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Most payments to print.") var limit = 50

    func run() async throws {
      let payments = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          let service = Banklink_V1_PaymentService.Client(wrapping: client)
          var payments: [Banklink_V1_Payment] = []
          var token = ""
          repeat {
            let page = try await service.listPendingApprovals(.with {
              $0.pageSize = Int32(min(self.limit - payments.count, Limits.maxPageSize))
              $0.pageToken = token
            })
            payments += page.payments
            token = page.nextPageToken
          } while !token.isEmpty && payments.count < self.limit
          return payments
        }
      }
      if self.connection.json {
        try printJSON(Banklink_V1_ListPendingApprovalsResponse.with { $0.payments = payments })
        return
      }
      printTable(
        ["PAYMENT", "AMOUNT", "FROM", "CREDITOR", "CREATOR", "APPROVALS", "DEADLINE"],
        payments.map { payment in
          [
            payment.paymentID, formatMoney(payment.instruction.amount), payment.instruction.debtorAccountID,
            payment.instruction.creditor.name, payment.creator, String(payment.approvals.count), isoTime(payment.approvalDeadline),
          ]
        })
    }
  }
}

struct ApproveCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "approve",
    abstract: "Approve a payment: sign its approval digest with your key and send your one-time password.",
    discussion: """
      The digest the daemon shows is recomputed here from the payment's instruction and must match
      before anything is signed: you sign what you saw. The key is the private key of the
      certificate you connect with (--key / BANKLINK_KEY).
      """)
  @OptionGroup var connection: ConnectionOptions
  @Argument(help: "The payment to approve.") var paymentID: String
  @Option(help: "The current code of your authenticator (6 digits); required where policy asks for one.") var otp = ""
  @Option(help: "A note kept with the approval.") var comment = ""
  @Option(help: "Your id for this approval: a retry with the same id gets the original answer (docs/approvals.md).")
  var requestID = ""

  func run() async throws {
    let key: Certificate.PrivateKey
    do {
      key = try Certificate.PrivateKey(pemEncoded: String(contentsOfFile: self.connection.client.keyPath, encoding: .utf8))
    } catch {
      throw ValidationError("cannot read the private key \(self.connection.client.keyPath): \(error)")
    }
    let response = try await reportingFailures {
      try await withBankLinkClient(self.connection.client) { client in
        let service = Banklink_V1_PaymentService.Client(wrapping: client)
        let payment = try await service.getPayment(.with { $0.paymentID = self.paymentID })
        guard payment.status == .pendingApproval, !payment.approvalDigest.isEmpty else {
          throw ValidationError("payment \(payment.paymentID) is \(statusText(payment.status)), not waiting for approval")
        }
        try Self.checkDigest(payment)
        let signature = try CertificateSignatures.sign(Array(payment.approvalDigest), with: key)
        return try await service.approvePayment(.with {
          $0.paymentID = self.paymentID
          $0.signature = Data(signature)
          $0.otpCode = self.otp
          $0.comment = self.comment
          $0.requestID = self.requestID
        })
      }
    }
    if self.connection.json {
      try printJSON(response)
    } else {
      printPayment(response.payment)
      printFields([("receipt", "journal entry \(response.receipt.journalSequence) \(hex(response.receipt.entryHash))")])
    }
  }

  /// The digest must be the one of the instruction shown, at the policy version and level the
  /// daemon names (docs/approvals.md): otherwise nothing is signed.
  static func checkDigest(_ payment: Banklink_V1_Payment) throws {
    guard let currency = CurrencyCode(payment.instruction.amount.currencyCode),
      let type = PaymentType(rawValue: String(describing: payment.instruction.type).snakeCased)
    else { throw ValidationError("the payment's instruction cannot be read back to check its digest") }
    let instruction = PaymentInstruction(
      debtorAccountID: payment.instruction.debtorAccountID,
      creditor: Creditor(
        name: payment.instruction.creditor.name, accountNumber: payment.instruction.creditor.accountNumber,
        iban: payment.instruction.creditor.iban, bic: payment.instruction.creditor.bic, country: payment.instruction.creditor.country),
      amount: Money(minorUnits: payment.instruction.amount.minorUnits, currency: currency), purpose: payment.instruction.purpose,
      requestedExecutionDate: payment.instruction.requestedExecutionDate, type: type)
    let expected = ApprovalDigest.digest(
      paymentID: payment.paymentID, instruction: instruction, policyVersion: payment.approvalPolicyVersion,
      level: Int(payment.approvalLevel))
    guard expected == Array(payment.approvalDigest) else {
      throw ValidationError("the approval digest the daemon sent does not match the payment it shows; nothing was signed")
    }
  }
}

struct RejectCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "reject", abstract: "Reject a payment waiting for approval (terminal).")
  @OptionGroup var connection: ConnectionOptions
  @Argument(help: "The payment to reject.") var paymentID: String
  @Option(help: "Why (required).") var reason: String
  @Option(help: "Your id for this rejection: a retry with the same id gets the original answer.") var requestID = ""

  func run() async throws {
    let response = try await reportingFailures {
      try await withBankLinkClient(self.connection.client) { client in
        try await Banklink_V1_PaymentService.Client(wrapping: client).rejectPayment(.with {
          $0.paymentID = self.paymentID
          $0.reason = self.reason
          $0.requestID = self.requestID
        })
      }
    }
    if self.connection.json { try printJSON(response) } else { printPayment(response.payment) }
  }
}

struct PolicyCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "policy", abstract: "Show or replace the approval policy (admin to replace).", subcommands: [Show.self, Put.self])

  struct Show: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the policy in force as JSON (version 0: none put yet).")
    @OptionGroup var connection: ConnectionOptions
    func run() async throws {
      let policy = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { try await Banklink_V1_AdminService.Client(wrapping: $0).getApprovalPolicy(.init()) }
      }
      try printJSON(policy)
    }
  }

  struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Replace the policy with FILE (JSON, the ApprovalPolicy message as `policy show` prints it).")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "Policy file (JSON).") var file: String
    @Option(help: "Refuse unless this is the version in force (0: do not check).") var expectedVersion: UInt64 = 0

    func run() async throws {
      let policy: Banklink_V1_ApprovalPolicy
      do {
        policy = try Banklink_V1_ApprovalPolicy(jsonString: String(contentsOfFile: self.file, encoding: .utf8))
      } catch {
        throw ValidationError("\(self.file) is not an approval policy in JSON: \(error)")
      }
      let response = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          try await Banklink_V1_AdminService.Client(wrapping: client).putApprovalPolicy(.with {
            $0.policy = policy
            $0.expectedVersion = self.expectedVersion
          })
        }
      }
      if self.connection.json {
        try printJSON(response)
      } else {
        printFields([
          ("version", String(response.policy.version)), ("rules", String(response.policy.rules.count)),
          ("receipt", "journal entry \(response.receipt.journalSequence) \(hex(response.receipt.entryHash))"),
        ])
      }
    }
  }
}

struct OTPCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "otp", abstract: "Enrol a principal's one-time passwords (admin), or compute a code.", subcommands: [Enroll.self, Code.self])

  struct Enroll: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Create a new OTP secret for PRINCIPAL (replacing any earlier one) and print it once.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The principal's identity.") var principal: String
    @Flag(help: "Do not draw the URI as a QR code (drawn for a dark-background terminal).") var noQR = false

    func run() async throws {
      let response = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          try await Banklink_V1_AdminService.Client(wrapping: client).enrollOtp(.with { $0.identity = self.principal })
        }
      }
      if self.connection.json {
        try printJSON(response)
        return
      }
      printFields([
        ("principal", self.principal), ("secret", response.secretBase32), ("uri", response.otpauthUri),
        ("receipt", "journal entry \(response.receipt.journalSequence)"),
      ])
      if !self.noQR, let code = QRCode.encode(response.otpauthUri) {
        print("\n" + code.terminalText())
      }
      print("\nScan the code, or add the URI or the secret to an authenticator app now: it is not shown again.")
    }
  }

  struct Code: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Print the current code for a base32 secret (for tests and demos; an authenticator app does this).")
    @Option(help: "The base32 secret `otp enroll` printed.") var secret: String

    func run() throws {
      guard let bytes = Base32.decode(self.secret), !bytes.isEmpty else { throw ValidationError("--secret is not base32") }
      let now = Instant(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
      print(TOTP.code(secret: bytes, step: TOTP.step(at: now)))
    }
  }
}

extension String {
  /// `crossBorder` → `cross_border`.
  fileprivate var snakeCased: String {
    var out = ""
    for character in self {
      if character.isUppercase { out += "_" + character.lowercased() } else { out.append(character) }
    }
    return out
  }
}
