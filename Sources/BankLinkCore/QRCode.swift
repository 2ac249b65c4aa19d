/// A QR code (ISO/IEC 18004) for short texts, to show an `otpauth://` enrolment URI in a terminal
/// without a dependency: byte mode, error correction level M, versions 1–10 (up to
/// ``maxBytes`` bytes; 57×57 modules at most, which fits an 80-column terminal with its quiet
/// zone). The construction follows the standard step by step — data bits, Reed–Solomon blocks
/// interleaved, function patterns, the zigzag placement, the mask with the lowest penalty, format
/// and version information — after Project Nayuki's reference implementation (MIT).
public struct QRCode: Sendable, Hashable {
  /// 1…10.
  public let version: Int
  /// Modules per side: 17 + 4 × version.
  public let size: Int
  /// The mask pattern chosen (0…7).
  public let mask: Int
  /// Row-major, `true` for a dark module.
  private var modules: [Bool]

  /// The longest text encoded (version 10-M in byte mode).
  public static let maxBytes = 213

  public subscript(x: Int, y: Int) -> Bool { self.modules[y * self.size + x] }

  /// The code for `text`'s UTF-8 bytes in the smallest version that holds them; nil when longer
  /// than ``maxBytes``.
  public static func encode(_ text: String) -> QRCode? {
    let data = Array(text.utf8)
    guard let version = (1...10).first(where: { Self.dataCodewords(version: $0) * 8 >= 4 + Self.countBits(version: $0) + data.count * 8 })
    else { return nil }
    // Byte mode (0100), the count, the bytes, a terminator, padding to the capacity.
    var bits = BitBuffer()
    bits.append(0b0100, count: 4)
    bits.append(data.count, count: Self.countBits(version: version))
    for byte in data { bits.append(Int(byte), count: 8) }
    let capacity = Self.dataCodewords(version: version) * 8
    bits.append(0, count: min(4, capacity - bits.count))
    bits.append(0, count: (8 - bits.count % 8) % 8)
    var pad = 0xEC
    while bits.count < capacity {
      bits.append(pad, count: 8)
      pad ^= 0xEC ^ 0x11
    }
    return QRCode(version: version, codewords: Self.interleaved(bits.bytes, version: version)).withBestMask()
  }

  /// The code drawn with Unicode half blocks, two module rows per line, with a quiet zone of
  /// ``quietZone`` modules. Light modules are drawn (filled), dark ones left blank, so the code
  /// reads correctly on a terminal with a dark background, as most are.
  public func terminalText(quietZone: Int = 4) -> String {
    let side = self.size + 2 * quietZone
    func light(_ x: Int, _ y: Int) -> Bool {
      let (cx, cy) = (x - quietZone, y - quietZone)
      guard cx >= 0, cy >= 0, cx < self.size, cy < self.size else { return true }
      return !self[cx, cy]
    }
    var lines: [String] = []
    for y in stride(from: 0, to: side, by: 2) {
      var line = ""
      for x in 0..<side {
        let top = light(x, y)
        let bottom = y + 1 < side ? light(x, y + 1) : false
        line += top ? (bottom ? "█" : "▀") : (bottom ? "▄" : " ")
      }
      lines.append(line)
    }
    return lines.joined(separator: "\n")
  }

  /// A plain PBM image (P1), `scale` pixels per module, with a quiet zone: for tests that read
  /// the code back with a real decoder.
  public func pbm(scale: Int = 4, quietZone: Int = 4) -> String {
    let side = (self.size + 2 * quietZone) * scale
    var out = "P1\n\(side) \(side)\n"
    for py in 0..<side {
      var row: [String] = []
      row.reserveCapacity(side)
      for px in 0..<side {
        let (x, y) = (px / scale - quietZone, py / scale - quietZone)
        let dark = x >= 0 && y >= 0 && x < self.size && y < self.size && self[x, y]
        row.append(dark ? "1" : "0")
      }
      out += row.joined(separator: " ") + "\n"
    }
    return out
  }

  // MARK: Tables (level M)

  /// Error correction codewords per block, versions 1…10, level M.
  private static let eccPerBlock = [10, 16, 26, 18, 24, 16, 18, 22, 22, 26]
  /// Blocks, versions 1…10, level M.
  private static let blocks = [1, 1, 1, 2, 2, 4, 4, 4, 5, 5]
  /// Format information bits for level M.
  private static let levelBits = 0

  private static func countBits(version: Int) -> Int { version < 10 ? 8 : 16 }

  /// Modules left for data and error correction once the function patterns are placed.
  private static func rawDataModules(version: Int) -> Int {
    var result = (16 * version + 128) * version + 64
    if version >= 2 {
      let alignments = version / 7 + 2
      result -= (25 * alignments - 10) * alignments - 55
      if version >= 7 { result -= 36 }
    }
    return result
  }

  private static func dataCodewords(version: Int) -> Int {
    Self.rawDataModules(version: version) / 8 - Self.eccPerBlock[version - 1] * Self.blocks[version - 1]
  }

  private static func alignmentPositions(version: Int) -> [Int] {
    guard version > 1 else { return [] }
    let count = version / 7 + 2
    let size = 17 + 4 * version
    let step = (version * 8 + count * 3 + 5) / (count * 4 - 4) * 2
    var positions: [Int] = []
    var position = size - 7
    for _ in 0..<(count - 1) {
      positions.insert(position, at: 0)
      position -= step
    }
    return [6] + positions
  }

  // MARK: Error correction

  /// Splits the data into blocks, appends each block's Reed–Solomon codewords, and interleaves.
  private static func interleaved(_ data: [UInt8], version: Int) -> [UInt8] {
    let blockCount = Self.blocks[version - 1]
    let eccLength = Self.eccPerBlock[version - 1]
    let raw = Self.rawDataModules(version: version) / 8
    let shortBlocks = blockCount - raw % blockCount
    let shortLength = raw / blockCount
    let divisor = Self.reedSolomonDivisor(degree: eccLength)
    var blocks: [[UInt8]] = []
    var offset = 0
    for index in 0..<blockCount {
      let length = shortLength - eccLength + (index < shortBlocks ? 0 : 1)
      var block = Array(data[offset..<(offset + length)])
      offset += length
      let ecc = Self.reedSolomonRemainder(block, divisor: divisor)
      if index < shortBlocks { block.append(0) }
      blocks.append(block + ecc)
    }
    var result: [UInt8] = []
    for column in 0..<blocks[0].count {
      for (index, block) in blocks.enumerated() where column != shortLength - eccLength || index >= shortBlocks {
        result.append(block[column])
      }
    }
    return result
  }

  private static func reedSolomonDivisor(degree: Int) -> [UInt8] {
    var result = [UInt8](repeating: 0, count: degree)
    result[degree - 1] = 1
    var root: UInt8 = 1
    for _ in 0..<degree {
      for index in 0..<degree {
        result[index] = Self.multiply(result[index], root)
        if index + 1 < degree { result[index] ^= result[index + 1] }
      }
      root = Self.multiply(root, 0x02)
    }
    return result
  }

  private static func reedSolomonRemainder(_ data: [UInt8], divisor: [UInt8]) -> [UInt8] {
    var result = [UInt8](repeating: 0, count: divisor.count)
    for byte in data {
      let factor = byte ^ result.removeFirst()
      result.append(0)
      for index in result.indices { result[index] ^= Self.multiply(divisor[index], factor) }
    }
    return result
  }

  /// Multiplication in GF(2⁸) modulo x⁸ + x⁴ + x³ + x² + 1.
  private static func multiply(_ x: UInt8, _ y: UInt8) -> UInt8 {
    var z = 0
    for bit in (0..<8).reversed() {
      z = (z << 1) ^ ((z >> 7) * 0x11D)
      z ^= ((Int(y) >> bit) & 1) * Int(x)
    }
    return UInt8(z)
  }

  // MARK: Drawing

  private var isFunction: [Bool]

  private init(version: Int, codewords: [UInt8]) {
    self.version = version
    self.size = 17 + 4 * version
    self.mask = 0
    self.modules = Array(repeating: false, count: self.size * self.size)
    self.isFunction = Array(repeating: false, count: self.size * self.size)
    self.drawFunctionPatterns()
    self.drawCodewords(codewords)
  }

  private mutating func set(_ x: Int, _ y: Int, _ dark: Bool) {
    self.modules[y * self.size + x] = dark
    self.isFunction[y * self.size + x] = true
  }

  private mutating func drawFunctionPatterns() {
    for index in 0..<self.size {
      self.set(6, index, index % 2 == 0)
      self.set(index, 6, index % 2 == 0)
    }
    for (x, y) in [(3, 3), (self.size - 4, 3), (3, self.size - 4)] {
      for dy in -4...4 {
        for dx in -4...4 where (0..<self.size).contains(x + dx) && (0..<self.size).contains(y + dy) {
          let distance = max(abs(dx), abs(dy))
          self.set(x + dx, y + dy, distance != 2 && distance != 4)
        }
      }
    }
    let positions = Self.alignmentPositions(version: self.version)
    for (i, y) in positions.enumerated() {
      for (j, x) in positions.enumerated() {
        let last = positions.count - 1
        if (i == 0 && j == 0) || (i == 0 && j == last) || (i == last && j == 0) { continue }  // the finders
        for dy in -2...2 {
          for dx in -2...2 { self.set(x + dx, y + dy, max(abs(dx), abs(dy)) != 1) }
        }
      }
    }
    self.drawFormatBits(mask: 0)  // reserved now, drawn for real once the mask is chosen
    if self.version >= 7 {
      var remainder = self.version
      for _ in 0..<12 { remainder = (remainder << 1) ^ ((remainder >> 11) * 0x1F25) }
      let bits = self.version << 12 | remainder
      for index in 0..<18 {
        let dark = (bits >> index) & 1 == 1
        let a = self.size - 11 + index % 3
        let b = index / 3
        self.set(a, b, dark)
        self.set(b, a, dark)
      }
    }
  }

  private mutating func drawFormatBits(mask: Int) {
    let data = Self.levelBits << 3 | mask
    var remainder = data
    for _ in 0..<10 { remainder = (remainder << 1) ^ ((remainder >> 9) * 0x537) }
    let bits = (data << 10 | remainder) ^ 0x5412
    func bit(_ index: Int) -> Bool { (bits >> index) & 1 == 1 }
    for index in 0...5 { self.set(8, index, bit(index)) }
    self.set(8, 7, bit(6))
    self.set(8, 8, bit(7))
    self.set(7, 8, bit(8))
    for index in 9..<15 { self.set(14 - index, 8, bit(index)) }
    for index in 0..<8 { self.set(self.size - 1 - index, 8, bit(index)) }
    for index in 8..<15 { self.set(8, self.size - 15 + index, bit(index)) }
    self.set(8, self.size - 8, true)  // the dark module
  }

  private mutating func drawCodewords(_ codewords: [UInt8]) {
    var bitIndex = 0
    var right = self.size - 1
    while right >= 1 {
      if right == 6 { right = 5 }  // skip the vertical timing pattern
      for vertical in 0..<self.size {
        for column in 0..<2 {
          let x = right - column
          let upward = (right + 1) & 2 == 0
          let y = upward ? self.size - 1 - vertical : vertical
          guard !self.isFunction[y * self.size + x], bitIndex < codewords.count * 8 else { continue }
          self.modules[y * self.size + x] = (codewords[bitIndex >> 3] >> (7 - (bitIndex & 7))) & 1 == 1
          bitIndex += 1
        }
      }
      right -= 2
    }
  }

  private mutating func applyMask(_ mask: Int) {
    for y in 0..<self.size {
      for x in 0..<self.size where !self.isFunction[y * self.size + x] {
        let invert: Bool
        switch mask {
        case 0: invert = (x + y) % 2 == 0
        case 1: invert = y % 2 == 0
        case 2: invert = x % 3 == 0
        case 3: invert = (x + y) % 3 == 0
        case 4: invert = (x / 3 + y / 2) % 2 == 0
        case 5: invert = x * y % 2 + x * y % 3 == 0
        case 6: invert = (x * y % 2 + x * y % 3) % 2 == 0
        default: invert = ((x + y) % 2 + x * y % 3) % 2 == 0
        }
        if invert { self.modules[y * self.size + x].toggle() }
      }
    }
  }

  /// Tries the eight masks and keeps the one with the lowest penalty score.
  private func withBestMask() -> QRCode {
    var best: (score: Int, code: QRCode)?
    for mask in 0..<8 {
      var candidate = self
      candidate.applyMask(mask)
      candidate.drawFormatBits(mask: mask)
      let score = candidate.penalty()
      if best == nil || score < best!.score {
        var chosen = candidate
        chosen.setMask(mask)
        best = (score, chosen)
      }
    }
    return best!.code
  }

  private mutating func setMask(_ mask: Int) {
    self = QRCode(version: self.version, size: self.size, mask: mask, modules: self.modules, isFunction: self.isFunction)
  }

  private init(version: Int, size: Int, mask: Int, modules: [Bool], isFunction: [Bool]) {
    self.version = version
    self.size = size
    self.mask = mask
    self.modules = modules
    self.isFunction = isFunction
  }

  /// The standard's penalty: long runs, 2×2 blocks, finder-like patterns, dark/light imbalance.
  private func penalty() -> Int {
    var score = 0
    let finderLike: [Bool] = [true, false, true, true, true, false, true, false, false, false, false]
    for horizontal in [true, false] {
      for a in 0..<self.size {
        var line: [Bool] = []
        line.reserveCapacity(self.size)
        for b in 0..<self.size { line.append(horizontal ? self[b, a] : self[a, b]) }
        var run = 1
        for index in 1...line.count {
          if index < line.count && line[index] == line[index - 1] {
            run += 1
          } else {
            if run >= 5 { score += 3 + run - 5 }
            run = 1
          }
        }
        if line.count >= finderLike.count {
          for start in 0...(line.count - finderLike.count) {
            let window = line[start..<(start + finderLike.count)]
            if window.elementsEqual(finderLike) || window.elementsEqual(finderLike.reversed()) { score += 40 }
          }
        }
      }
    }
    for y in 0..<(self.size - 1) {
      for x in 0..<(self.size - 1) {
        let color = self[x, y]
        if self[x + 1, y] == color && self[x, y + 1] == color && self[x + 1, y + 1] == color { score += 3 }
      }
    }
    let dark = self.modules.reduce(0) { $0 + ($1 ? 1 : 0) }
    let total = self.size * self.size
    score += (abs(dark * 20 - total * 10) + total - 1) / total * 10 - 10
    return max(score, 0)
  }
}

/// Bits appended most significant first.
private struct BitBuffer {
  private(set) var bits: [Bool] = []
  var count: Int { self.bits.count }

  mutating func append(_ value: Int, count: Int) {
    for shift in stride(from: count - 1, through: 0, by: -1) { self.bits.append((value >> shift) & 1 == 1) }
  }

  var bytes: [UInt8] {
    stride(from: 0, to: self.bits.count, by: 8).map { start in
      self.bits[start..<min(start + 8, self.bits.count)].reduce(UInt8(0)) { $0 << 1 | ($1 ? 1 : 0) }
    }
  }
}
