import BankLinkProto
import GRPCCore

/// `banklink.v1.MonitoringService`.
struct MonitoringServiceHandler: Banklink_V1_MonitoringService.SimpleServiceProtocol {
  typealias Method = Banklink_V1_MonitoringService.Method

  func subscribeAlerts(
    request: Banklink_V1_SubscribeAlertsRequest,
    response: RPCWriter<Banklink_V1_SubscribeAlertsResponse>,
    context: ServerContext
  ) async throws {
    throw unimplemented(Method.SubscribeAlerts.descriptor)
  }

  func listAlerts(request: Banklink_V1_ListAlertsRequest, context: ServerContext) async throws -> Banklink_V1_ListAlertsResponse {
    throw unimplemented(Method.ListAlerts.descriptor)
  }

  func acknowledgeAlert(
    request: Banklink_V1_AcknowledgeAlertRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_AcknowledgeAlertResponse {
    throw unimplemented(Method.AcknowledgeAlert.descriptor)
  }
}
