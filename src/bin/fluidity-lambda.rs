//! `fluidity-lambda` (installed as `bootstrap`): the Wake, Status, Sleep and
//! Kill functions, chosen by the handler name Lambda passes in `_HANDLER`.

use std::process::ExitCode;

use fluidity::lambda::{self, Function, env};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> ExitCode {
    fluidity::install_crypto_provider();
    fluidity::telemetry::init(fluidity::telemetry::LogFormat::Json);
    let handler = std::env::var("_HANDLER").unwrap_or_default();
    let Some(function) = Function::from_handler(&handler) else {
        fluidity::telemetry::to_stderr(format_args!(
            "fluidity-lambda: unknown handler `{handler}`; set the function's handler to wake, status, sleep or kill\n"
        ));
        return ExitCode::from(2);
    };
    let settings = match env::Settings::from_env(&env::ProcessEnv) {
        Ok(settings) => settings,
        Err(error) => {
            fluidity::telemetry::to_stderr(format_args!("fluidity-lambda: {error}\n"));
            return ExitCode::from(2);
        }
    };
    let control = match lambda::control_from_environment(settings).await {
        Ok(control) => control,
        Err(error) => {
            fluidity::telemetry::to_stderr(format_args!("fluidity-lambda: {error}\n"));
            return ExitCode::FAILURE;
        }
    };
    let control = &control;
    let result = lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        lambda::handle(function, control, &event.payload)
            .await
            .map_err(|e| lambda_runtime::Diagnostic { error_type: e.error_type.to_string(), error_message: e.message })
    }))
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            fluidity::telemetry::to_stderr(format_args!("fluidity-lambda: runtime error: {error}\n"));
            ExitCode::FAILURE
        }
    }
}
