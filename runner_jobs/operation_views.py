"""Bulk operations of your workspaces: list, read, cancel (SPEC §9). They are started by
``POST /api/v1/runner-jobs/bulk/`` (``RunnerJobViewSet.bulk``). Scoped like jobs: another
workspace's operation is a 404; a viewer reads, a member or admin also cancels."""

from typing import Any

import django_filters
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from runner_jobs import services
from runner_jobs.models import Operation, OperationStatus
from runner_jobs.pagination import JobCursorPagination
from runner_jobs.selectors import operations_for_user
from runner_jobs.serializers import OperationSerializer
from runner_jobs.views import (
    FIELD_ERRORS,
    READ_ONLY_ROLE_MESSAGE,
    UNAUTHENTICATED,
    api_error,
    can_write,
)

NOT_FOUND = api_error("No such operation in your workspaces.")


class OperationFilter(django_filters.FilterSet):
    workspace = django_filters.CharFilter(
        field_name="workspace__slug", help_text="A workspace slug."
    )
    status = django_filters.ChoiceFilter(choices=OperationStatus.choices)

    class Meta:
        model = Operation
        fields = ["workspace", "status"]


class CanWriteOperation(BasePermission):
    message = READ_ONLY_ROLE_MESSAGE

    def has_object_permission(self, request: Request, view: APIView, obj: Operation) -> bool:
        return request.method in SAFE_METHODS or (
            obj.workspace_id is not None and can_write(request.user, obj.workspace_id)
        )


@extend_schema(tags=["operations"])
class OperationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Operation]
):
    """Bulk operations of your workspaces."""

    permission_classes = [IsAuthenticated, CanWriteOperation]
    serializer_class = OperationSerializer
    pagination_class = JobCursorPagination
    filter_backends = [DjangoFilterBackend]
    filterset_class = OperationFilter
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[Operation]:
        return operations_for_user(self.request.user)

    def get_object(self) -> Operation:
        try:
            operation = self.get_queryset().get(pk=self.kwargs["pk"])
        except (Operation.DoesNotExist, ValidationError) as exc:
            raise NotFound("No such operation in your workspaces.") from exc
        self.check_object_permissions(self.request, operation)
        return operation

    @extend_schema(
        summary="List bulk operations",
        description="Newest first, cursor-paginated; `workspace` and `status` filters.",
        responses={200: OperationSerializer(many=True), 400: FIELD_ERRORS, 401: UNAUTHENTICATED},
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(
        summary="Read a bulk operation",
        description="Its counts move while it runs: matched, succeeded, skipped, failed.",
        responses={200: OperationSerializer, 401: UNAUTHENTICATED, 404: NOT_FOUND},
    )
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(
        summary="Cancel a bulk operation",
        description=(
            "running → cancelled: the batches in progress finish, no further batch starts; the "
            "jobs it already changed stay changed. 409 once it has ended."
        ),
        request=None,
        responses={
            200: OperationSerializer,
            401: UNAUTHENTICATED,
            403: api_error("Your role in the operation's workspace is viewer."),
            404: NOT_FOUND,
            409: api_error("`invalid_transition`: the operation has already ended."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        operation = services.operation_cancel(operation_id=self.get_object().pk)
        return Response(OperationSerializer(operation).data)
