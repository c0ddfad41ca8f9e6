"""aiobotocore adapter of the QueueTransport port."""

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from agent_grid_runtime.public_settings import AwsSettings
from agent_grid_runtime.public_transport import OutgoingMessage, QueueDepth, ReceivedMessage, TransportError

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient
    from types_aiobotocore_sqs.type_defs import (
        DeleteMessageBatchRequestEntryTypeDef,
        MessageAttributeValueTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )


def create_sqs_client(aws: AwsSettings, *, max_connections: int) -> "AbstractAsyncContextManager[SQSClient]":
    access_key = aws.access_key_id.get_secret_value() if aws.access_key_id else None
    secret_key = aws.secret_access_key.get_secret_value() if aws.secret_access_key else None
    if aws.endpoint_url and access_key is None:
        # Emulators accept any credentials but botocore refuses to sign without some.
        access_key, secret_key = "test", "test"
    config = AioConfig(
        # Our own loops retry with backoff and log; botocore's hidden retries would only delay that.
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        # Must exceed the longest long poll (20 s).
        read_timeout=40,
        max_pool_connections=max_connections,
    )
    return get_session().create_client(
        "sqs",
        region_name=aws.region,
        endpoint_url=aws.endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


class SqsTransport:
    def __init__(self, client: "SQSClient") -> None:
        self._client = client

    async def send_batch(self, queue_url: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        entries: list[SendMessageBatchRequestEntryTypeDef] = []
        for message in messages:
            entry: SendMessageBatchRequestEntryTypeDef = {"Id": message.entry_id, "MessageBody": message.body}
            if message.delay_s:
                entry["DelaySeconds"] = message.delay_s
            if message.attributes:
                entry["MessageAttributes"] = _attributes(message.attributes)
            entries.append(entry)
        try:
            response = await self._client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        except (ClientError, BotoCoreError, OSError) as error:
            raise TransportError(f"send_message_batch failed: {error}") from error
        return [failure["Id"] for failure in response.get("Failed", [])]

    async def receive(
        self, queue_url: str, *, max_messages: int, wait_time_s: int, visibility_timeout_s: int
    ) -> list[ReceivedMessage]:
        try:
            response = await self._client.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=wait_time_s,
                VisibilityTimeout=visibility_timeout_s,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                MessageAttributeNames=["All"],
            )
        except (ClientError, BotoCoreError, OSError) as error:
            raise TransportError(f"receive_message failed: {error}") from error
        return [
            ReceivedMessage(
                transport_id=message["MessageId"],
                receipt_handle=message["ReceiptHandle"],
                body=message["Body"],
                receive_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
                attributes={
                    name: value.get("StringValue", "") for name, value in message.get("MessageAttributes", {}).items()
                },
                sent_at=_sent_at(message.get("Attributes", {}).get("SentTimestamp")),
            )
            for message in response.get("Messages", [])
        ]

    async def delete_batch(self, queue_url: str, receipt_handles: Sequence[str]) -> list[str]:
        entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
            {"Id": str(index), "ReceiptHandle": handle} for index, handle in enumerate(receipt_handles)
        ]
        try:
            response = await self._client.delete_message_batch(QueueUrl=queue_url, Entries=entries)
        except (ClientError, BotoCoreError, OSError) as error:
            raise TransportError(f"delete_message_batch failed: {error}") from error
        return [receipt_handles[int(failure["Id"])] for failure in response.get("Failed", [])]

    async def change_visibility(self, queue_url: str, receipt_handle: str, timeout_s: int) -> None:
        try:
            await self._client.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=timeout_s
            )
        except (ClientError, BotoCoreError, OSError) as error:
            raise TransportError(f"change_message_visibility failed: {error}") from error

    async def ensure_queue(self, name: str, attributes: Mapping[str, str]) -> str:
        try:
            response = await self._client.create_queue(QueueName=name, Attributes=dict(attributes))  # type: ignore[arg-type]
            return response["QueueUrl"]
        except ClientError as error:
            # CreateQueue is idempotent only for identical attributes; converge a queue made with other ones.
            if _error_code(error) not in {"QueueAlreadyExists", "QueueNameExists"}:
                raise TransportError(f"create_queue {name} failed: {error}") from error
        except (BotoCoreError, OSError) as error:
            raise TransportError(f"create_queue {name} failed: {error}") from error
        url = await self.queue_url(name)
        try:
            await self._client.set_queue_attributes(QueueUrl=url, Attributes=dict(attributes))  # type: ignore[arg-type]
        except (ClientError, BotoCoreError, OSError) as error:
            raise TransportError(f"set_queue_attributes {name} failed: {error}") from error
        return url

    async def queue_url(self, name: str) -> str:
        try:
            return (await self._client.get_queue_url(QueueName=name))["QueueUrl"]
        except (ClientError, BotoCoreError, OSError) as error:
            raise TransportError(f"queue {name!r} not found: {error}") from error

    async def queue_arn(self, queue_url: str) -> str:
        return (await self._attributes(queue_url, ["QueueArn"]))["QueueArn"]

    async def depth(self, queue_url: str) -> QueueDepth:
        attributes = await self._attributes(
            queue_url,
            [
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
        return QueueDepth(
            visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        )

    async def _attributes(self, queue_url: str, names: list[str]) -> dict[str, str]:
        try:
            response = await self._client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)  # type: ignore[arg-type]
        except (ClientError, BotoCoreError, OSError) as error:
            raise TransportError(f"get_queue_attributes failed: {error}") from error
        return {str(name): value for name, value in response.get("Attributes", {}).items()}


def _attributes(values: Mapping[str, str]) -> "dict[str, MessageAttributeValueTypeDef]":
    return {name: {"DataType": "String", "StringValue": value} for name, value in values.items()}


def _sent_at(epoch_ms: str | None) -> datetime | None:
    if not epoch_ms or not epoch_ms.isdigit():
        return None
    return datetime.fromtimestamp(int(epoch_ms) / 1000, tz=UTC)


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
