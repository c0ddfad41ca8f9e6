"""The schema, in GitHub's own names: a subset of https://docs.github.com/graphql (GitHub's public schema).

Field order within a type is alphabetical, as in GitHub's published schema, so additions are easy to diff.
"""

SDL = """
scalar DateTime
scalar URI

interface Node { id: ID! }

interface Actor {
  avatarUrl(size: Int): URI!
  login: String!
  resourcePath: URI!
  url: URI!
}

interface RepositoryOwner {
  avatarUrl(size: Int): URI!
  id: ID!
  login: String!
  resourcePath: URI!
  url: URI!
}

type User implements Node & Actor & RepositoryOwner {
  avatarUrl(size: Int): URI!
  databaseId: Int
  id: ID!
  login: String!
  name: String
  resourcePath: URI!
  url: URI!
}

type Bot implements Node & Actor {
  avatarUrl(size: Int): URI!
  databaseId: Int
  id: ID!
  login: String!
  resourcePath: URI!
  url: URI!
}

type Organization implements Node & Actor & RepositoryOwner {
  avatarUrl(size: Int): URI!
  databaseId: Int
  id: ID!
  login: String!
  name: String
  resourcePath: URI!
  url: URI!
}

enum IssueState { OPEN CLOSED }
enum IssueStateReason { REOPENED NOT_PLANNED COMPLETED DUPLICATE }
enum CommentAuthorAssociation {
  MEMBER OWNER MANNEQUIN COLLABORATOR CONTRIBUTOR FIRST_TIME_CONTRIBUTOR FIRST_TIMER NONE
}

type PageInfo {
  endCursor: String
  hasNextPage: Boolean!
  hasPreviousPage: Boolean!
  startCursor: String
}

type Repository implements Node {
  databaseId: Int
  id: ID!
  isPrivate: Boolean!
  issue(number: Int!): Issue
  issues(
    after: String, before: String, first: Int, last: Int, labels: [String!], states: [IssueState!]
  ): IssueConnection!
  name: String!
  nameWithOwner: String!
  owner: RepositoryOwner!
  resourcePath: URI!
  url: URI!
}

type SubIssuesSummary { completed: Int! percentCompleted: Int! total: Int! }

type IssueDependenciesSummary { blockedBy: Int! blocking: Int! totalBlockedBy: Int! totalBlocking: Int! }

type Issue implements Node {
  assignees(after: String, before: String, first: Int, last: Int): UserConnection!
  author: Actor
  authorAssociation: CommentAuthorAssociation!
  blockedBy(after: String, before: String, first: Int, last: Int): IssueConnection!
  blocking(after: String, before: String, first: Int, last: Int): IssueConnection!
  body: String!
  closed: Boolean!
  closedAt: DateTime
  comments(after: String, before: String, first: Int, last: Int): IssueCommentConnection!
  createdAt: DateTime!
  databaseId: Int
  id: ID!
  issueDependenciesSummary: IssueDependenciesSummary!
  labels(after: String, before: String, first: Int, last: Int): LabelConnection
  number: Int!
  parent: Issue
  repository: Repository!
  resourcePath: URI!
  state: IssueState!
  stateReason: IssueStateReason
  subIssues(after: String, before: String, first: Int, last: Int): IssueConnection!
  subIssuesSummary: SubIssuesSummary!
  title: String!
  updatedAt: DateTime!
  url: URI!
}

type IssueComment implements Node {
  author: Actor
  authorAssociation: CommentAuthorAssociation!
  body: String!
  createdAt: DateTime!
  databaseId: Int
  id: ID!
  issue: Issue!
  repository: Repository!
  updatedAt: DateTime!
  url: URI!
}

type Label implements Node {
  color: String!
  description: String
  id: ID!
  name: String!
  url: URI!
}

type IssueEdge { cursor: String! node: Issue }
type IssueConnection { edges: [IssueEdge] nodes: [Issue] pageInfo: PageInfo! totalCount: Int! }
type IssueCommentEdge { cursor: String! node: IssueComment }
type IssueCommentConnection {
  edges: [IssueCommentEdge] nodes: [IssueComment] pageInfo: PageInfo! totalCount: Int!
}
type UserEdge { cursor: String! node: User }
type UserConnection { edges: [UserEdge] nodes: [User] pageInfo: PageInfo! totalCount: Int! }
type LabelEdge { cursor: String! node: Label }
type LabelConnection { edges: [LabelEdge] nodes: [Label] pageInfo: PageInfo! totalCount: Int! }

type Query {
  repository(followRenames: Boolean = true, name: String!, owner: String!): Repository
  viewer: User!
}
"""
