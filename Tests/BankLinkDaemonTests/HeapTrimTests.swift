import CBankLinkThreads
import Testing

@testable import BankLinkDaemon

/// The heap is given back to the system when a burst of calls ends, not under load.
@Suite("Heap trim after a burst")
struct HeapTrimTests {
  @Test("a trim follows a period with calls and one without; never a steady load, never idleness alone")
  func burstEnds() {
    #expect(HeapTrimService.burstEnded(previousDelta: 500, delta: 0))
    #expect(!HeapTrimService.burstEnded(previousDelta: 500, delta: 3))
    #expect(!HeapTrimService.burstEnded(previousDelta: 0, delta: 0))
    #expect(!HeapTrimService.burstEnded(previousDelta: 0, delta: 12))
  }

  #if canImport(Glibc)
    @Test("freed heap is released to the system (glibc's malloc_trim)")
    func releases() {
      // Blocks under glibc's mmap threshold grow the heap itself; freed, they stay with malloc.
      var blocks: [UnsafeMutableRawPointer] = []
      for _ in 0..<512 {
        let block = UnsafeMutableRawPointer.allocate(byteCount: 32 * 1024, alignment: 16)
        block.initializeMemory(as: UInt8.self, repeating: 1, count: 32 * 1024)
        blocks.append(block)
      }
      for block in blocks { block.deallocate() }
      #expect(banklink_release_free_heap() == 1)
    }
  #endif
}
