import BankLinkRuntime
import Testing

@Suite("Process runtime")
struct ProcessRuntimeTests {
  @Test("the CPU count comes from the affinity mask in /proc/self/status")
  func allowedCPUs() throws {
    #expect(ProcessRuntime.allowedCPUCount(status: "Name:\tbanklinkd\nCpus_allowed:\t1\nCpus_allowed_list:\t0\n") == 1)
    #expect(ProcessRuntime.allowedCPUCount(status: "Cpus_allowed:\t3\n") == 2)
    #expect(ProcessRuntime.allowedCPUCount(status: "Cpus_allowed:\tff,ffffffff\n") == 40)
    #expect(ProcessRuntime.allowedCPUCount(status: "Cpus_allowed:\t0\n") == nil)
    #expect(ProcessRuntime.allowedCPUCount(status: "Name:\tx\n") == nil)
    #expect(ProcessRuntime.allowedCPUCount(status: nil) == nil)
    #if os(Linux)
    // This process's own mask parses (Linux always has it) to at least one CPU.
    let own = try #require(ProcessRuntime.allowedCPUCount())
    #expect(own >= 1)
    #endif
  }
}
