import BankLinkCore
import Foundation

/// The development PKI written by `banklink dev-certs` (and `make certs`): a CA, a server
/// certificate for `localhost`/`127.0.0.1`, and one client certificate per demo principal.
///
/// The files match what `banklinkd` reads in development mode; the principals match the
/// development principals table, so every demo certificate has a role.
public enum DevelopmentPKI {
  /// The demo principals and the roles the development configuration grants them.
  public static let principals: [Principal] = [
    Principal(identity: "admin", roles: [.admin]),
    Principal(identity: "erp", roles: [.payer]),
    Principal(identity: "alice", roles: [.approver]),
    Principal(identity: "bob", roles: [.approver]),
    Principal(identity: "viewer", roles: [.viewer]),
    Principal(identity: "auditor", roles: [.auditor]),
    Principal(identity: "clerk", roles: [.reconciler]),
  ]

  /// Default directory of the development PKI, relative to the repository root.
  public static let defaultDirectory = "certs/dev"

  /// Writes `ca.pem`/`ca.key`, `server.pem`/`server.key` and `NAME.pem`/`NAME.key` for every
  /// demo principal into `directory` (created if missing). Returns the paths written.
  @discardableResult
  public static func write(to directory: String, validityDays: Int = 825) throws -> [String] {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let notAfter = Date().addingTimeInterval(TimeInterval(validityDays) * 86400)
    let ca = try CertificateAuthority.generate(commonName: "BankLink Development CA")
    var written: [String] = []
    func save(_ issued: IssuedCertificate, _ name: String) throws {
      let certificatePath = "\(directory)/\(name).pem"
      let keyPath = "\(directory)/\(name).key"
      try issued.write(certificateTo: certificatePath, keyTo: keyPath)
      written += [certificatePath, keyPath]
    }
    try save(ca.issued, "ca")
    try save(
      try ca.issue(
        .server,
        commonName: "banklinkd",
        dnsNames: ["localhost"],
        ipAddresses: [[127, 0, 0, 1], Array(repeating: 0, count: 15) + [1]],
        notValidAfter: notAfter
      ),
      "server"
    )
    for principal in principals {
      try save(try ca.issue(.client, commonName: principal.identity, notValidAfter: notAfter), principal.identity)
    }
    return written
  }
}
