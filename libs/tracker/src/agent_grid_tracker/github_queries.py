"""The GraphQL documents the GitHub adapter sends: one round trip for an issue and its whole neighbourhood.

Field names are GitHub's public GraphQL schema (``Issue.parent``, ``subIssues``, ``blockedBy``, ``blocking``).
The test server executes these same documents against its own schema, so a typo fails a test.
"""

SUMMARY_FIELDS = """
fragment Summary on Issue {
  id
  databaseId
  number
  title
  state
  stateReason
  url
  updatedAt
  repository { nameWithOwner }
  assignees(first: 20) { nodes { login } }
  labels(first: 50) { nodes { name } }
}
"""

ISSUE_VIEW = (
    """
query IssueView($owner: String!, $name: String!, $number: Int!, $comments: Int!) {
  repository(owner: $owner, name: $name) {
    issue(number: $number) {
      ...Summary
      body
      createdAt
      author { login }
      authorAssociation
      parent { ...Summary }
      subIssues(first: 100) { nodes { ...Summary } pageInfo { hasNextPage endCursor } }
      blockedBy(first: 100) { nodes { ...Summary } }
      blocking(first: 100) { nodes { ...Summary } }
      comments(last: $comments) {
        nodes { databaseId author { login } authorAssociation body createdAt updatedAt url }
      }
    }
  }
}
"""
    + SUMMARY_FIELDS
)

MORE_SUB_ISSUES = (
    """
query MoreSubIssues($owner: String!, $name: String!, $number: Int!, $after: String!) {
  repository(owner: $owner, name: $name) {
    issue(number: $number) {
      subIssues(first: 100, after: $after) { nodes { ...Summary } pageInfo { hasNextPage endCursor } }
    }
  }
}
"""
    + SUMMARY_FIELDS
)
