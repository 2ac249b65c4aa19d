import BankLinkBanks
import BankLinkStore
import Metrics

/// Counts failures talking to the bank (Prometheus `banklink_connector_errors_total`) by
/// `operation` (`sync_accounts`, `sync_account`, `submit`, `status_reports`, `inbox`,
/// `inbox_quarantined`, `inbox_file`: one inbox file that could not be processed) and `kind`
/// (the bank error's code: `unavailable`, `rejected`, `timeout`, `malformed`, `not_found`;
/// `storage` for a local store failure; `other`).
enum ConnectorErrors {
  static let metric = "banklink_connector_errors_total"

  static func count(_ error: any Error, operation: String) {
    Self.count(kind: Self.kind(of: error), operation: operation)
  }

  static func count(kind: String, operation: String, by amount: Int = 1) {
    guard amount > 0 else { return }
    Counter(label: Self.metric, dimensions: [("operation", operation), ("kind", kind)]).increment(by: amount)
  }

  static func kind(of error: any Error) -> String {
    if let sync = error as? AccountSyncError { return Self.kind(of: sync.underlying) }
    if let bank = error as? BankError { return String(bank.code.description.map { $0 == " " ? "_" : $0 }) }
    if error is StoreError { return "storage" }
    return "other"
  }
}
