import BankLinkCore
import BankLinkJournal
import BankLinkPKI
import Foundation
import NIOCertificateReloading
import NIOSSL
import SwiftASN1
import Synchronization
import X509

/// The daemon's own TLS certificate chain and private key, replaceable while it serves
/// (certificate rotation on reload, without a restart).
///
/// The TLS layer asks for the current pair at the start of every handshake (NIOSSL's context
/// callback, through grpc-swift-nio-transport's `certificateReloader`): a connection made after a
/// reload presents the new certificate, and connections already open keep the session they
/// negotiated — nothing is dropped. The same key signs the journal's checkpoints, so the
/// checkpoint signer and verifier follow the certificate.
public final class ServerCertificate: CertificateReloader {
  /// A certificate chain and key read from files and checked to belong together.
  public struct Material: Sendable {
    public let chain: [NIOSSLCertificate]
    public let key: NIOSSLPrivateKey
    /// The first certificate of the chain (the server's own).
    public let leaf: Certificate
    public let signer: JournalCheckpoint.Signer
    public let verifier: JournalCheckpoint.Verifier
    /// The leaf's serial number, hex.
    public var serialHex: String { self.leaf.serialNumber.hex }

    /// Reads `certificatePath` (PEM chain, the server's certificate first) and `keyPath` (PEM key)
    /// and checks them: both parse, the key belongs to the certificate, the certificate is valid
    /// at `now` and can sign checkpoints. Throws ``Problem`` naming the file at fault.
    public static func load(certificatePath: String, keyPath: String, now: Date) throws -> Material {
      let certificatePEM = try Self.read(certificatePath, key: "tls.certificate")
      let keyPEM = try Self.read(keyPath, key: "tls.key")
      let chain: [NIOSSLCertificate]
      let leaf: Certificate
      do {
        chain = try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8))
        guard let first = chain.first else { throw Problem(key: "tls.certificate", message: "\(certificatePath) holds no certificate") }
        leaf = try Certificate(derEncoded: try first.toDERBytes())
      } catch let problem as Problem {
        throw problem
      } catch {
        throw Problem(key: "tls.certificate", message: "\(certificatePath) does not parse as a PEM certificate chain")
      }
      guard leaf.notValidBefore <= now, now < leaf.notValidAfter else {
        throw Problem(
          key: "tls.certificate",
          message: "\(certificatePath) is not valid now (valid from \(leaf.notValidBefore) until \(leaf.notValidAfter))")
      }
      let key: NIOSSLPrivateKey
      do {
        key = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)
      } catch {
        throw Problem(key: "tls.key", message: "\(keyPath) does not parse as a PEM private key")
      }
      let signer: JournalCheckpoint.Signer
      let verifier: JournalCheckpoint.Verifier
      do {
        // The signer checks that the key belongs to the certificate.
        // The leaf alone: the file may hold a chain.
        let leafPEM = try leaf.serializeAsPEM().pemString
        signer = try JournalCheckpoint.Signer(certificatePEM: leafPEM, privateKeyPEM: keyPEM)
        verifier = try JournalCheckpoint.Verifier(certificatePEM: leafPEM)
      } catch {
        throw Problem(key: "tls.key", message: "\(keyPath) does not belong to \(certificatePath) or cannot sign: \(error)")
      }
      return Material(chain: chain, key: key, leaf: leaf, signer: signer, verifier: verifier)
    }

    static func read(_ path: String, key: String) throws -> String {
      guard let data = FileManager.default.contents(atPath: path), data.count <= Limits.maxConfigFileBytes,
        let text = String(data: data, encoding: .utf8)
      else {
        throw Problem(key: key, message: "cannot read \(path) (a text file of at most \(Limits.maxConfigFileBytes) bytes)")
      }
      return text
    }
  }

  /// Why a certificate or key was refused; `key` is the configuration key at fault.
  public struct Problem: Error, CustomStringConvertible {
    public let key: String
    public let message: String
    public var description: String { "\(self.key): \(self.message)" }
  }

  private let state: Mutex<Material>

  public init(_ material: Material) {
    self.state = Mutex(material)
  }

  /// The pair in force.
  public var current: Material { self.state.withLock { $0 } }

  /// Puts `material` in force for every handshake from now on.
  public func replace(with material: Material) {
    self.state.withLock { $0 = material }
  }

  /// Called by NIOSSL for each handshake.
  public var sslContextConfigurationOverride: NIOSSLContextConfigurationOverride {
    let material = self.current
    var override = NIOSSLContextConfigurationOverride()
    override.certificateChain = material.chain.map { .certificate($0) }
    override.privateKey = .privateKey(material.key)
    return override
  }
}
