import BankLinkProto
import GRPCCore

/// `banklink.v1.AccountService`.
struct AccountServiceHandler: Banklink_V1_AccountService.SimpleServiceProtocol {
  typealias Method = Banklink_V1_AccountService.Method

  func listAccounts(
    request: Banklink_V1_ListAccountsRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ListAccountsResponse {
    throw unimplemented(Method.ListAccounts.descriptor)
  }

  func getBalance(request: Banklink_V1_GetBalanceRequest, context: ServerContext) async throws -> Banklink_V1_Balance {
    throw unimplemented(Method.GetBalance.descriptor)
  }

  func listTransactions(
    request: Banklink_V1_ListTransactionsRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ListTransactionsResponse {
    throw unimplemented(Method.ListTransactions.descriptor)
  }
}
