import BankLinkCore
import BankLinkFormats
import BankLinkProto
import Foundation
import GRPCCore
import GRPCProtobuf
import Logging
import SwiftProtobuf

/// `ImportPaymentFile`: an ERP's pain.001 payment run mapped onto the gateway's accounts and
/// created as one batch (idempotency key `pain001:<MsgId>`).
enum PaymentFileImport {
  static func idempotencyKey(_ messageID: String) -> String { "pain001:" + messageID }

  static func normalized(_ account: String) -> String { account.filter { $0 != " " }.uppercased() }

  /// The batch's instructions, or the violations naming every transfer that cannot be mapped
  /// (`content.transfers[N].debtor_account`).
  static func items(_ message: Pain001Reader.Message, accounts: [Account]) -> Result<[Banklink_V1_PaymentInstruction], GoogleRPCStatus> {
    var byIdentification: [String: Account] = [:]
    for account in accounts {
      for identification in [account.iban, account.number] where !identification.isEmpty {
        byIdentification[Self.normalized(identification)] = account
      }
    }
    var problems: [FieldViolation] = []
    var items: [Banklink_V1_PaymentInstruction] = []
    for (index, transfer) in message.transfers.enumerated() {
      guard let account = byIdentification[Self.normalized(transfer.debtorAccount)] else {
        problems.append(
          FieldViolation(
            field: "content.transfers[\(index)].debtor_account",
            description: "transfers[\(index)] (\(LogText.prefix(transfer.endToEndID))): debtor account \(LogText.prefix(transfer.debtorAccount)) is not an account of this gateway"))
        continue
      }
      // The debtor bank's country is in its BIC (letters 5 and 6).
      let bankCountry = account.bankBIC.count >= 6 ? String(account.bankBIC.dropFirst(4).prefix(2)) : ""
      items.append(.with {
        $0.debtorAccountID = account.id
        $0.amount = .with {
          $0.minorUnits = transfer.amountMinor
          $0.currencyCode = transfer.currency
        }
        $0.creditor = .with {
          $0.name = transfer.creditorName
          let creditorAccount = Self.normalized(transfer.creditorAccount)
          if PaymentValidation.isValidIBAN(creditorAccount) { $0.iban = creditorAccount } else { $0.accountNumber = transfer.creditorAccount }
          $0.bic = transfer.creditorAgentBIC
          $0.country = transfer.creditorCountry.isEmpty ? bankCountry : transfer.creditorCountry
        }
        $0.purpose = String((transfer.remittance.isEmpty ? transfer.creditorReference : transfer.remittance).prefix(140))
        $0.requestedExecutionDate = transfer.executionDate
        $0.type = transfer.creditorCountry.isEmpty || transfer.creditorCountry == bankCountry ? .domestic : .crossBorder
      })
    }
    guard problems.isEmpty else { return .failure(badRequest(problems)) }
    return .success(items)
  }
}

extension PaymentServiceHandler {
  func importPaymentFile(
    request: Banklink_V1_ImportPaymentFileRequest, context: ServerContext
  ) async throws -> Banklink_V1_ImportPaymentFileResponse {
    let caller = try Caller.required()
    guard !request.content.isEmpty else { throw APIError.invalidArgument("content", "is empty: send the pain.001 file's bytes") }
    guard request.content.count <= Limits.maxPaymentFileBytes else {
      throw APIError.invalidArgument("content", "\(request.content.count) bytes; a payment file is at most \(Limits.maxPaymentFileBytes): split the run")
    }
    if let problem = PaymentValidation.textProblem(request.fileName, maxLength: Limits.maxFileNameLength) {
      throw APIError.invalidArgument("file_name", problem)
    }
    let message: Pain001Reader.Message
    do {
      message = try Pain001Reader.read(.data(request.content))
    } catch let error as FormatError {
      throw APIError.invalidArgument("content", "refused: \(error)")
    }
    guard message.transfers.count <= Limits.maxBatchItems else {
      throw APIError.invalidArgument(
        "content", "\(message.transfers.count) transfers; a batch holds at most \(Limits.maxBatchItems): split the run")
    }
    let key = PaymentFileImport.idempotencyKey(message.messageID)
    try validIdempotencyKey(key, field: "content")
    let accounts = try withStore { try AccountCache(store: self.ledger.store).accounts() }
    let items: [Banklink_V1_PaymentInstruction]
    switch PaymentFileImport.items(message, accounts: accounts) {
    case .success(let mapped): items = mapped
    case .failure(let status): throw status
    }
    let batchRequest = Banklink_V1_CreatePaymentBatchRequest.with {
      $0.idempotencyKey = key
      $0.items = items
    }
    var response = Banklink_V1_ImportPaymentFileResponse.with {
      $0.messageID = message.messageID
      $0.idempotencyKey = key
      $0.erpEndToEndIds = message.transfers.map(\.endToEndID)
    }
    if request.dryRun {
      response.batchRequest = batchRequest
      return response
    }
    APIError.logger.info(
      "payment file imported",
      metadata: ["message_id": "\(LogText.prefix(message.messageID))", "transfers": "\(items.count)", "caller": "\(caller.principal.identity)"])
    response.batch = try await self.createPaymentBatch(request: batchRequest, context: context)
    return response
  }
}
