import BankLinkCore
import BankLinkStore
import Crypto
import Foundation

/// Seals OTP secrets at rest with AES-256-GCM under a key kept in a file outside the store
/// (`security.otp_key_file`): a copy of the data directory alone yields no secret. The
/// principal's identity is the associated data, so a sealed secret moved to another principal's
/// record does not open.
public struct OTPVault: Sendable {
  let key: SymmetricKey

  public init(key: SymmetricKey) {
    self.key = key
  }

  /// Loads the key file: 32 bytes, base64 (one line). Refused when group- or world-accessible.
  /// With `create`, a missing file is created with a new random key, mode 0600.
  public static func load(path: String, create: Bool) throws -> OTPVault {
    if !FileManager.default.fileExists(atPath: path) {
      guard create else { throw VaultError("\(path) does not exist") }
      let key = SymmetricKey(size: .bits256)
      let text = key.withUnsafeBytes { Data($0).base64EncodedString() } + "\n"
      let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
      guard descriptor >= 0 else { throw VaultError("cannot create \(path): errno \(errno)") }
      defer { close(descriptor) }
      let written = text.utf8CString.withUnsafeBufferPointer { write(descriptor, $0.baseAddress, $0.count - 1) }
      guard written == text.utf8.count, fsync(descriptor) == 0 else { throw VaultError("cannot write \(path)") }
      return OTPVault(key: key)
    }
    var info = stat()
    guard stat(path, &info) == 0 else { throw VaultError("cannot read \(path)") }
    guard info.st_mode & 0o077 == 0 else {
      throw VaultError("\(path) is accessible to its group or others (mode \(String(info.st_mode & 0o777, radix: 8))); it must be 0600")
    }
    guard let text = try? String(contentsOfFile: path, encoding: .utf8),
      let bytes = Data(base64Encoded: text.trimmingCharacters(in: .whitespacesAndNewlines)), bytes.count == 32
    else { throw VaultError("\(path) must hold a 32-byte key in base64") }
    return OTPVault(key: SymmetricKey(data: bytes))
  }

  public func seal(_ secret: [UInt8], for principal: String) throws -> [UInt8] {
    let box = try AES.GCM.seal(secret, using: self.key, authenticating: Array(principal.utf8))
    guard let combined = box.combined else { throw VaultError("AES-GCM produced no combined box") }
    return [1] + Array(combined)
  }

  public func unseal(_ sealed: [UInt8], for principal: String) throws -> [UInt8] {
    guard sealed.first == 1 else { throw StoreError(code: .corrupted, message: "unknown sealed OTP secret format") }
    let box = try AES.GCM.SealedBox(combined: sealed.dropFirst())
    return Array(try AES.GCM.open(box, using: self.key, authenticating: Array(principal.utf8)))
  }
}

public struct VaultError: Error, Sendable, CustomStringConvertible {
  public var description: String
  init(_ description: String) { self.description = description }
}

extension ServerCertificate {
  /// The permission bits of `path` (symbolic links followed), or nil when it cannot be read: a
  /// private key must not be readable by others. (Here, beside the vault's own key check: this
  /// file's imports give `stat` one unambiguous definition.)
  public static func permissions(ofFile path: String) -> UInt32? {
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    return UInt32(info.st_mode) & 0o7777
  }
}
