import BankLinkRuntime
import Testing

@Suite("Process runtime")
struct ProcessRuntimeTests {
  @Test("the CPU count comes from the affinity mask in /proc/self/status")
  func allowedCPUs() {
    #expect(ProcessRuntime.allowedCPUCount(status: "Name:\tbanklinkd\nCpus_allowed:\t1\nCpus_allowed_list:\t0\n") == 1)
    #expect(ProcessRuntime.allowedCPUCount(status: "Cpus_allowed:\t3\n") == 2)
    #expect(ProcessRuntime.allowedCPUCount(status: "Cpus_allowed:\tff,ffffffff\n") == 40)
    #expect(ProcessRuntime.allowedCPUCount(status: "Cpus_allowed:\t0\n") == nil)
    #expect(ProcessRuntime.allowedCPUCount(status: "Name:\tx\n") == nil)
    #expect(ProcessRuntime.allowedCPUCount(status: nil) == nil)
    // This process: at least one CPU, never more than the machine has.
    let own = ProcessRuntime.allowedCPUCount()
    #expect(own == nil || own! >= 1)
  }
}
