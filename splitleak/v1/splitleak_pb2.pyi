from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class HelloRequest(_message.Message):
    __slots__ = ("protocol_version", "run_id", "num_classes", "batch_size", "config_digest", "cut_shape", "resume_from", "steps_per_epoch", "from_start")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_FIELD_NUMBER: _ClassVar[int]
    STEPS_PER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    FROM_START_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    run_id: str
    num_classes: int
    batch_size: int
    config_digest: str
    cut_shape: _containers.RepeatedScalarFieldContainer[int]
    resume_from: StepPoint
    steps_per_epoch: int
    from_start: bool
    def __init__(self, protocol_version: _Optional[int] = ..., run_id: _Optional[str] = ..., num_classes: _Optional[int] = ..., batch_size: _Optional[int] = ..., config_digest: _Optional[str] = ..., cut_shape: _Optional[_Iterable[int]] = ..., resume_from: _Optional[_Union[StepPoint, _Mapping]] = ..., steps_per_epoch: _Optional[int] = ..., from_start: _Optional[bool] = ...) -> None: ...

class StepPoint(_message.Message):
    __slots__ = ("epoch", "step")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    step: int
    def __init__(self, epoch: _Optional[int] = ..., step: _Optional[int] = ...) -> None: ...

class HelloReply(_message.Message):
    __slots__ = ("protocol_version", "run_id", "defense", "returns_predictions", "next_epoch", "next_step", "session")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    DEFENSE_FIELD_NUMBER: _ClassVar[int]
    RETURNS_PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    NEXT_STEP_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    run_id: str
    defense: str
    returns_predictions: bool
    next_epoch: int
    next_step: int
    session: str
    def __init__(self, protocol_version: _Optional[int] = ..., run_id: _Optional[str] = ..., defense: _Optional[str] = ..., returns_predictions: _Optional[bool] = ..., next_epoch: _Optional[int] = ..., next_step: _Optional[int] = ..., session: _Optional[str] = ...) -> None: ...

class TrainStepRequest(_message.Message):
    __slots__ = ("run_id", "epoch", "step", "sample_ids", "smashed")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_IDS_FIELD_NUMBER: _ClassVar[int]
    SMASHED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    epoch: int
    step: int
    sample_ids: _containers.RepeatedScalarFieldContainer[int]
    smashed: Tensor
    def __init__(self, run_id: _Optional[str] = ..., epoch: _Optional[int] = ..., step: _Optional[int] = ..., sample_ids: _Optional[_Iterable[int]] = ..., smashed: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class TrainStepReply(_message.Message):
    __slots__ = ("cut_grad", "loss", "replayed")
    CUT_GRAD_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    cut_grad: Tensor
    loss: float
    replayed: bool
    def __init__(self, cut_grad: _Optional[_Union[Tensor, _Mapping]] = ..., loss: _Optional[float] = ..., replayed: _Optional[bool] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("run_id", "request_id", "sample_ids", "smashed")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_IDS_FIELD_NUMBER: _ClassVar[int]
    SMASHED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    request_id: str
    sample_ids: _containers.RepeatedScalarFieldContainer[int]
    smashed: Tensor
    def __init__(self, run_id: _Optional[str] = ..., request_id: _Optional[str] = ..., sample_ids: _Optional[_Iterable[int]] = ..., smashed: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class InferReply(_message.Message):
    __slots__ = ("count", "predictions")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    count: int
    predictions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, count: _Optional[int] = ..., predictions: _Optional[_Iterable[int]] = ...) -> None: ...

class FinishRequest(_message.Message):
    __slots__ = ("run_id", "train_seconds", "train_rounds", "infer_seconds", "infer_rounds", "epochs", "failure", "session")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    INFER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INFER_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    train_seconds: float
    train_rounds: int
    infer_seconds: float
    infer_rounds: int
    epochs: int
    failure: str
    session: str
    def __init__(self, run_id: _Optional[str] = ..., train_seconds: _Optional[float] = ..., train_rounds: _Optional[int] = ..., infer_seconds: _Optional[float] = ..., infer_rounds: _Optional[int] = ..., epochs: _Optional[int] = ..., failure: _Optional[str] = ..., session: _Optional[str] = ...) -> None: ...

class FinishReply(_message.Message):
    __slots__ = ("test_accuracy", "test_samples", "defense", "epsilon", "delta", "final_train_loss", "defense_metrics")
    class DefenseMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TEST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TEST_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DEFENSE_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FINAL_TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    DEFENSE_METRICS_FIELD_NUMBER: _ClassVar[int]
    test_accuracy: float
    test_samples: int
    defense: str
    epsilon: float
    delta: float
    final_train_loss: float
    defense_metrics: _containers.ScalarMap[str, float]
    def __init__(self, test_accuracy: _Optional[float] = ..., test_samples: _Optional[int] = ..., defense: _Optional[str] = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., final_train_loss: _Optional[float] = ..., defense_metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...
