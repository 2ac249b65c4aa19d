/// Client- and bank-supplied text made safe to quote in an error message, a log line or an
/// audit record: at most a short prefix, with control characters, quotes, backslashes and
/// anything outside printable ASCII escaped. A 1 MiB account id then costs a caller a short
/// `grpc-message`, and a certificate name with a newline cannot forge a log line.
public enum LogText {
  /// How many bytes of the original are quoted before `…` is appended.
  public static let maxQuotedBytes = 64

  /// `text` escaped and cut to ``maxQuotedBytes`` bytes of the original.
  public static func prefix(_ text: String, maxBytes: Int = LogText.maxQuotedBytes) -> String {
    // Most text is short printable ASCII with nothing to escape: returned as it is, without
    // building a new string scalar by scalar.
    let plain = text.utf8.count <= maxBytes && text.utf8.allSatisfy { byte in
      byte >= 0x20 && byte <= 0x7E && byte != UInt8(ascii: "\\") && byte != UInt8(ascii: "\"")
    }
    if plain { return text }
    var out = ""
    var taken = 0
    for scalar in text.unicodeScalars {
      let width = UTF8.width(scalar)
      if taken + width > maxBytes {
        out += "…"
        break
      }
      taken += width
      switch scalar {
      case "\\": out += "\\\\"
      case "\"": out += "\\\""
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case " "..."~": out.unicodeScalars.append(scalar)
      default:
        let hex = String(scalar.value, radix: 16, uppercase: true)
        out += "\\u{\(hex)}"
      }
    }
    return out
  }
}
