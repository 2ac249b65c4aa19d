import BankLinkProto
import GRPCCore

/// `banklink.v1.ReconciliationService`.
struct ReconciliationServiceHandler: Banklink_V1_ReconciliationService.SimpleServiceProtocol {
  typealias Method = Banklink_V1_ReconciliationService.Method

  func importStatement(
    request: Banklink_V1_ImportStatementRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ImportStatementResponse {
    throw unimplemented(Method.ImportStatement.descriptor)
  }

  func reconcile(request: Banklink_V1_ReconcileRequest, context: ServerContext) async throws -> Banklink_V1_ReconcileResponse {
    throw unimplemented(Method.Reconcile.descriptor)
  }

  func getReconciliationReport(
    request: Banklink_V1_GetReconciliationReportRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ReconciliationReport {
    throw unimplemented(Method.GetReconciliationReport.descriptor)
  }
}
