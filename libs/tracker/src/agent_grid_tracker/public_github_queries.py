"""The GraphQL documents the GitHub adapter sends: one round trip for an issue and its whole neighbourhood.

Field names are GitHub's public GraphQL schema (``Issue.parent``, ``subIssues``, ``blockedBy``, ``blocking``).
Public so that the GitHub test server's tests execute these very documents against its schema: a typo, or a
field the stand-in does not serve, fails a test. GitHub caps a parent at 100 sub-issues, so one page of
``subIssues(first: 100)`` is the whole list.
"""

__all__ = ["ISSUE_VIEW", "SUMMARY_FIELDS"]

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
      author { __typename login }
      authorAssociation
      parent { ...Summary }
      subIssues(first: 100) { nodes { ...Summary } }
      blockedBy(first: 100) { nodes { ...Summary } }
      blocking(first: 100) { nodes { ...Summary } }
      comments(last: $comments) {
        nodes { databaseId author { __typename login } authorAssociation body createdAt updatedAt url }
      }
    }
  }
}
"""
    + SUMMARY_FIELDS
)
