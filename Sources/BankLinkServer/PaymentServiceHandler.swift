import BankLinkProto
import GRPCCore

/// `banklink.v1.PaymentService`.
struct PaymentServiceHandler: Banklink_V1_PaymentService.SimpleServiceProtocol {
  typealias Method = Banklink_V1_PaymentService.Method

  func createPayment(
    request: Banklink_V1_CreatePaymentRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_CreatePaymentResponse {
    throw unimplemented(Method.CreatePayment.descriptor)
  }

  func createPaymentBatch(
    request: Banklink_V1_CreatePaymentBatchRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_CreatePaymentBatchResponse {
    throw unimplemented(Method.CreatePaymentBatch.descriptor)
  }

  func getPayment(request: Banklink_V1_GetPaymentRequest, context: ServerContext) async throws -> Banklink_V1_Payment {
    throw unimplemented(Method.GetPayment.descriptor)
  }

  func listPayments(
    request: Banklink_V1_ListPaymentsRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ListPaymentsResponse {
    throw unimplemented(Method.ListPayments.descriptor)
  }

  func cancelPayment(
    request: Banklink_V1_CancelPaymentRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_CancelPaymentResponse {
    throw unimplemented(Method.CancelPayment.descriptor)
  }

  func approvePayment(
    request: Banklink_V1_ApprovePaymentRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ApprovePaymentResponse {
    throw unimplemented(Method.ApprovePayment.descriptor)
  }

  func rejectPayment(
    request: Banklink_V1_RejectPaymentRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_RejectPaymentResponse {
    throw unimplemented(Method.RejectPayment.descriptor)
  }

  func listPendingApprovals(
    request: Banklink_V1_ListPendingApprovalsRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ListPendingApprovalsResponse {
    throw unimplemented(Method.ListPendingApprovals.descriptor)
  }
}
