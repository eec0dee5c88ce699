// The napi-rs addon. Everything else in this package wraps it; nothing outside imports it.
import * as addon from '@boxlite/native'

export const native = addon
export type NativeRuntime = addon.Runtime
export type NativeBox = addon.Box
export type NativeExecution = addon.Execution
export type NativeFiles = addon.Files
export type NativeFileReader = addon.FileReader
export type NativeFileWatcher = addon.FileWatcher
